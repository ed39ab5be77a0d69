"""The `cicd` command.

`cicd validate` is pure (no settings, no database) so that it works in any checkout; so are the
API client commands of `cicd.client` (login, runs, run, logs, cancel, rerun, dispatch, approve,
reject, environments, deployments, rollback). The server-side subcommands set Django up first
and report configuration errors in one line, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cicd import client

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["manage"]:
        # Everything after it is the management command's own (`cicd manage NAME --help`).
        return _manage(argv[1:])
    parser = _build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "validate":
        return validate_command(args.paths, matrix_cap=args.matrix_cap)
    if args.command == "exec":
        from cicd import exec_command

        return exec_command.main(args)
    if args.command == "serve":
        return _serve(args)
    if args.command in client.COMMANDS:
        return client.main(args)
    parser.print_help()
    return EXIT_USAGE


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cicd", description="A self-hosted CI/CD server.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check workflow files and print their errors as file:line:col: message",
        description=(
            "Validate workflow files. A directory is searched like a repository: "
            ".cicd/workflows/*.yml, else .github/workflows/*.yml; a directory with no such "
            "folders is searched for *.yml/*.yaml directly inside it."
        ),
    )
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--matrix-cap", type=int, default=256, help="largest matrix allowed")

    from cicd import exec_command  # only its arguments: the runner is imported when it runs

    exec_command.add_parser(commands)

    serve = commands.add_parser(
        "serve", help="run the web server, a scheduler and workers in the foreground"
    )
    serve.add_argument("--host", default=None, help="address to bind (default: CICD_BIND_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default: CICD_PORT)")
    serve.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: CICD_WORKERS)"
    )

    commands.add_parser("manage", help="run a Django management command (cicd manage migrate)")

    client.add_parsers(commands)  # login, runs, run, logs, cancel, rerun, dispatch, approve...
    return parser


def validate_command(paths: Sequence[str], *, matrix_cap: int = 256) -> int:
    """Validate files; print each problem as `file:line:col: message`. 0 valid, 1 invalid."""
    from pipelines.discovery import workflow_paths
    from pipelines.errors import WorkflowError
    from pipelines.parser import parse_workflow

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = _workflow_files_in(path, workflow_paths)
            if not found:
                print(f"{raw}: no workflow files found", file=sys.stderr)
                return EXIT_USAGE
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            print(f"{raw}: no such file or directory", file=sys.stderr)
            return EXIT_USAGE

    problem_count = 0
    for file in files:
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            print(f"{file}:1:1: the file is not valid UTF-8 (byte {exc.start})")
            problem_count += 1
            continue
        try:
            parse_workflow(text, str(file), matrix_cap=matrix_cap)
        except WorkflowError as error:
            for problem in error.problems:
                print(problem)
            problem_count += len(error.problems)
    if problem_count:
        noun = "problem" if problem_count == 1 else "problems"
        print(f"{problem_count} {noun} in {len(files)} file(s)", file=sys.stderr)
        return EXIT_INVALID
    print(f"{len(files)} workflow file(s) valid", file=sys.stderr)
    return EXIT_OK


def _workflow_files_in(directory: Path, workflow_paths) -> list[Path]:
    relative = [
        p.relative_to(directory).as_posix()
        for folder in (directory / ".cicd" / "workflows", directory / ".github" / "workflows")
        if folder.is_dir()
        for p in folder.iterdir()
    ]
    if relative:
        return [directory / p for p in workflow_paths(relative)]
    return sorted(p for p in directory.iterdir() if p.suffix in {".yml", ".yaml"} and p.is_file())


def _setup_django() -> bool:
    """Load settings; print a configuration error in one line instead of a traceback."""
    from django.core.exceptions import ImproperlyConfigured

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cicd.settings")
    try:
        import django

        django.setup()
    except ImproperlyConfigured as exc:
        print(f"cicd: configuration error: {exc}", file=sys.stderr)
        return False
    return True


def _manage(argv: Sequence[str]) -> int:
    if not _setup_django():
        return EXIT_USAGE
    from django.core.management import execute_from_command_line

    execute_from_command_line(["cicd manage", *argv])
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    if not _setup_django():
        return EXIT_USAGE
    from cicd.serve import serve

    return serve(host=args.host, port=args.port, worker_processes=args.workers)


if __name__ == "__main__":
    sys.exit(main())
