"""A git repository to push from: commit files and read shas (as tests/gitrepo.py does)."""

from __future__ import annotations

import subprocess
from pathlib import Path


class Origin:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), "-c", "user.name=bench", "-c",
             "user.email=bench@example.org", *args],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        """Write files, commit them all, and return the new sha."""
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")
