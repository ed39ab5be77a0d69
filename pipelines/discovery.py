"""Which files of a repository are workflows (SPEC 3): `.cicd/workflows/*.yml`, falling back to
`.github/workflows/*.yml` so that a repository built on GitHub works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

WORKFLOW_DIRECTORIES = (".cicd/workflows", ".github/workflows")
WORKFLOW_SUFFIXES = (".yml", ".yaml")


def workflow_paths(repo_paths: Iterable[str]) -> list[str]:
    """The workflow files among all the file paths of a repository (POSIX, relative), sorted.

    Only files directly in the folder count (GitHub ignores subfolders). The `.github` folder is
    used only when `.cicd/workflows` has no workflow at all, never merged with it.
    """
    paths = [path.removeprefix("./") for path in repo_paths]
    for directory in WORKFLOW_DIRECTORIES:
        found = sorted({path for path in paths if _is_workflow_in(path, directory)})
        if found:
            return found
    return []


def _is_workflow_in(path: str, directory: str) -> bool:
    folder, _, name = path.rpartition("/")
    stem = name
    for suffix in WORKFLOW_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return folder == directory and name.endswith(WORKFLOW_SUFFIXES) and bool(stem)
