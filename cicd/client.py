"""The `cicd` commands that talk to a server through its JSON API: login, runs list, run show,
logs [--follow], cancel, rerun, dispatch; approve, reject, environments, deployments, rollback.

Standard library only, and no Django: these run on any machine with the package installed. The
server and token come from --server/--token, else CICD_SERVER/CICD_TOKEN, else the file `cicd
login` wrote ($XDG_CONFIG_HOME/cicd/config.json, mode 0600).

Exit status: 0 done, 1 the server refused or the job failed, 2 usage or connection errors.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import http.client
import itertools
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

USER_AGENT = "cicd-cli/1"
TIMEOUT_SECONDS = 30
DISPATCH_TIMEOUT_SECONDS = 120
FOLLOW_POLL_SECONDS = 0.5
LOG_PAGE = 1000
# Following a log survives a server restart or a network blip of up to this long.
RETRY_FOR_SECONDS = 300
RETRY_FIRST_DELAY = 0.25
RETRY_MAX_DELAY = 5.0
SUCCESSFUL_ENDINGS = {"success", "skipped"}
COMMANDS = (
    "login",
    "runs",
    "run",
    "logs",
    "cancel",
    "rerun",
    "dispatch",
    "approve",
    "reject",
    "environments",
    "deployments",
    "rollback",
)


# -------------------------------------------------------------------------------- errors


class ClientError(Exception):
    exit_status = EXIT_USAGE


class UsageError(ClientError):
    """Something to fix on this side: a missing server or token, a bad argument."""


class Refused(ClientError):
    """The server answered 4xx: its message, problems and field errors are for the user."""

    exit_status = EXIT_REFUSED

    def __init__(
        self, status: int, message: str, problems: list[str], fields: Mapping[str, str]
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems
        self.fields = dict(fields)


class Unavailable(ClientError):
    """No usable answer: no connection, a dropped one, a cut-off body, or a 5xx. Worth retrying
    for reads."""


# -------------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class Settings:
    server: str
    token: str


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".config"
    )
    return Path(base) / "cicd" / "config.json"


def load_config(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path}: {error}; run cicd login again") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object; run cicd login again")
    return {key: value for key, value in data.items() if isinstance(value, str)}


def save_config(path: Path, settings: Settings) -> None:
    """Write the file readable by its owner only, from the first byte: it holds a token."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump({"server": settings.server, "token": settings.token}, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def resolve(
    server: str | None,
    token: str | None,
    *,
    environ: Mapping[str, str] = os.environ,
    path: Path | None = None,
) -> Settings:
    """Each of server and token from the flag, else the environment, else the config file."""
    config: dict[str, str] | None = None

    def pick(flag: str | None, variable: str, key: str) -> str:
        nonlocal config
        if flag:
            return flag
        if environ.get(variable):
            return environ[variable]
        if config is None:
            config = load_config(path or config_path(environ))
        return config.get(key, "")

    settings = Settings(
        server=normalise_server(pick(server, "CICD_SERVER", "server")),
        token=pick(token, "CICD_TOKEN", "token").strip(),
    )
    if not settings.server:
        raise UsageError("no server: run cicd login --server URL, or give --server or CICD_SERVER")
    if not settings.token:
        raise UsageError("no token: run cicd login, or give --token or CICD_TOKEN")
    return settings


def normalise_server(server: str) -> str:
    server = server.strip().rstrip("/")
    if server and urllib.parse.urlsplit(server).scheme not in ("http", "https"):
        raise UsageError(f"the server must be an http:// or https:// URL, not {server!r}")
    return server


# -------------------------------------------------------------------------------- client


class Client:
    """JSON over HTTP to /api/v1/. A new connection per request, so a dropped one costs one
    request."""

    def __init__(self, settings: Settings, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.settings = settings
        self.timeout = timeout

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        query = {key: value for key, value in (params or {}).items() if value is not None}
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self._request("GET", path)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._request("POST", path, body or {})

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.settings.server}/api/v1/{path.lstrip('/')}"
        request = urllib.request.Request(
            url,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self.settings.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise _http_error(error) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise Unavailable(f"cannot reach {self.settings.server}: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise Unavailable(f"{self.settings.server} sent an incomplete answer") from None


def _http_error(error: urllib.error.HTTPError) -> ClientError:
    try:
        answer = json.loads(error.read())
    except (ValueError, OSError, http.client.HTTPException):
        answer = None
    if not isinstance(answer, dict):
        answer = {"error": f"HTTP {error.code} {error.reason}"}
    message = str(answer.get("error") or f"HTTP {error.code}")
    if error.code >= 500:
        return Unavailable(f"the server failed: {message}")
    problems = [str(problem) for problem in answer.get("problems") or []]
    fields = answer.get("fields") if isinstance(answer.get("fields"), dict) else {}
    return Refused(error.code, message, problems, {str(k): str(v) for k, v in fields.items()})


# ------------------------------------------------------------------------------- parsers


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Add the client subcommands to the `cicd` parser."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--server", help="the server's URL (else CICD_SERVER, else login)")
    connection.add_argument("--token", help="an API token (else CICD_TOKEN, else login)")

    login = commands.add_parser(
        "login",
        help="check an API token and save it with the server's URL",
        description="Check the token and save the server and token to "
        "$XDG_CONFIG_HOME/cicd/config.json (readable by you only). Without --token, it is "
        "asked for; create one on the server's Settings > API tokens page.",
    )
    login.add_argument("--server", required=True, help="the server's URL")
    login.add_argument("--token", help="an API token (default: ask for it)")

    runs = commands.add_parser("runs", help="list runs")
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    runs_list = runs_commands.add_parser(
        "list", help="list runs, newest first", parents=[connection]
    )
    runs_list.add_argument("repository", nargs="?", help="organisation/repository (default: all)")
    runs_list.add_argument("--status", help="queued, running, success, failure, cancelled...")
    runs_list.add_argument("--branch")
    runs_list.add_argument("--workflow", help="the workflow's path or name")
    runs_list.add_argument("--event", help="push, pull_request, schedule, workflow_dispatch...")
    runs_list.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    runs_list.add_argument("--after", type=int, help="the run id printed for the next page")

    run = commands.add_parser("run", help="show a run")
    run_commands = run.add_subparsers(dest="run_command", metavar="COMMAND", required=True)
    show = run_commands.add_parser("show", help="a run and its jobs", parents=[connection])
    show.add_argument("run_id", type=int, metavar="RUN_ID")
    show.add_argument("--attempt", type=int, help="an earlier attempt (default: the latest)")

    logs = commands.add_parser(
        "logs",
        help="print a job's log; --follow streams it until the job ends",
        parents=[connection],
        description="Print a job's log. With --follow, keep printing new lines until the job "
        "ends (exit 1 unless it succeeded); a dropped connection or a restarting server is "
        "retried and the log resumes where it was, without gaps or repeats.",
    )
    logs.add_argument("job_id", type=int, metavar="JOB_ID")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--timestamps", action="store_true", help="prefix each line with its time")

    cancel = commands.add_parser("cancel", help="cancel a run", parents=[connection])
    cancel.add_argument("run_id", type=int, metavar="RUN_ID")

    rerun = commands.add_parser("rerun", help="re-run an ended run", parents=[connection])
    rerun.add_argument("run_id", type=int, metavar="RUN_ID")
    rerun.add_argument("--failed", action="store_true", help="only the jobs that did not succeed")

    dispatch = commands.add_parser(
        "dispatch",
        help="start a workflow with workflow_dispatch inputs",
        parents=[connection],
        description="Start a workflow by hand.",
    )
    dispatch.add_argument("repository", help="organisation/repository")
    dispatch.add_argument("workflow", help="the workflow file's path, e.g. .cicd/workflows/x.yml")
    dispatch.add_argument("--ref", help="branch, tag or sha (default: the default branch)")
    dispatch.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=VALUE", dest="inputs"
    )
    dispatch.add_argument("--request-id", help="makes a retried dispatch return the same run")

    approve = commands.add_parser(
        "approve",
        help="approve a job waiting at an environment",
        parents=[connection],
        description="Approve a job waiting at an environment's rules (you must be one of its "
        "reviewers). The job is queued once every rule holds.",
    )
    approve.add_argument("job_id", type=int, metavar="JOB_ID")
    approve.add_argument("-m", "--comment", default="", help="a comment for the audit log")

    reject = commands.add_parser(
        "reject",
        help="reject a job waiting at an environment; it fails with your comment",
        parents=[connection],
    )
    reject.add_argument("job_id", type=int, metavar="JOB_ID")
    reject.add_argument("-m", "--comment", required=True, help="why (the job fails with it)")

    environments = commands.add_parser(
        "environments", help="list a repository's environments", parents=[connection]
    )
    environments.add_argument("repository", help="organisation/repository")

    deployments = commands.add_parser(
        "deployments", help="an environment's deployments, newest first", parents=[connection]
    )
    deployments.add_argument("repository", help="organisation/repository")
    deployments.add_argument("environment", help="the environment's name")
    deployments.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    deployments.add_argument(
        "--after", type=int, help="the deployment id printed for the next page"
    )

    rollback = commands.add_parser(
        "rollback",
        help="redeploy an environment's previous successful version",
        parents=[connection],
        description="Roll the environment back to its previous successful version (the latest "
        "successful deployment of another image), with that deployment's inputs.",
    )
    rollback.add_argument("repository", help="organisation/repository")
    rollback.add_argument("environment", help="the environment's name")
    rollback.add_argument(
        "--skip-analysis", action="store_true", help="no analysis and no pauses between steps"
    )


def main(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a client subcommand; print errors as the server gave them, never a traceback."""
    out = out or sys.stdout
    err = err or sys.stderr
    command = args.command
    try:
        if command == "login":
            return login(args, out=out, err=err)
        settings = resolve(args.server, args.token)
        # A dispatch fetches the repository on the server first: give it time.
        client = Client(
            settings, timeout=DISPATCH_TIMEOUT_SECONDS if command == "dispatch" else TIMEOUT_SECONDS
        )
        handler: Callable[..., int] = {
            "runs": runs_list,
            "run": run_show,
            "logs": logs_command,
            "cancel": cancel_command,
            "rerun": rerun_command,
            "dispatch": dispatch_command,
            "approve": review_command,
            "reject": review_command,
            "environments": environments_command,
            "deployments": deployments_command,
            "rollback": rollback_command,
        }[command]
        return handler(client, args, out=out, err=err)
    except ClientError as error:
        _print_error(command, error, err)
        return error.exit_status
    except KeyboardInterrupt:
        print("", file=err)
        return 130


def _print_error(command: str, error: ClientError, err: TextIO) -> None:
    print(f"cicd {command}: {error}", file=err)
    if isinstance(error, Refused):
        for problem in error.problems:
            print(f"  {problem}", file=err)
        for name, message in error.fields.items():
            if not any(name in problem for problem in error.problems):
                print(f"  {name}: {message}", file=err)


# ------------------------------------------------------------------------------ commands


def login(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    server = normalise_server(args.server)
    if not server:
        raise UsageError("give the server's URL with --server")
    token = args.token or os.environ.get("CICD_TOKEN") or ""
    if not token:
        token = getpass.getpass(f"API token for {server}: ")
    token = token.strip()
    if not token:
        raise UsageError("no token given")
    settings = Settings(server=server, token=token)
    user = Client(settings).get("user")
    path = config_path()
    save_config(path, settings)
    scopes = ", ".join(user.get("scopes") or []) or "none"
    print(f"logged in to {server} as {user.get('username')} (scopes: {scopes})", file=out)
    print(f"saved to {path}", file=err)
    return EXIT_OK


def runs_list(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    params = {
        "status": args.status,
        "branch": args.branch,
        "workflow": args.workflow,
        "event": args.event,
        "limit": args.limit,
        "after": args.after,
    }
    if args.repository:
        organisation, _, repository = args.repository.partition("/")
        path = f"repos/{_segment(organisation)}/{_segment(repository)}/runs"
    else:
        path = "runs"
    answer = client.get(path, params)
    rows = [
        [
            str(run["id"]),
            f"{run['repository']}#{run['number']}",
            run["workflow_name"] or run["workflow"],
            run["event"],
            run["branch"] or run["ref"],
            run["sha"][:7],
            run["state"],
            _when(run.get("started_at") or run.get("created_at")),
            _duration(run.get("duration_seconds")),
        ]
        for run in answer["runs"]
    ]
    if not rows:
        print("no runs", file=err)
        return EXIT_OK
    _table(
        ["ID", "RUN", "WORKFLOW", "EVENT", "BRANCH", "SHA", "STATE", "STARTED", "TOOK"], rows, out
    )
    if answer.get("next"):
        print(f"more: add --after {answer['next']}", file=err)
    return EXIT_OK


def run_show(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    answer = client.get(f"runs/{args.run_id}", {"attempt": args.attempt})
    run = answer["run"]
    print(
        f"{run['repository']} #{run['number']} (run {run['id']}, attempt {answer['attempt']} "
        f"of {run['attempt']}): {run['state']}",
        file=out,
    )
    print(
        f"workflow {run['workflow_name']} ({run['workflow']}), {run['event']} on "
        f"{run['branch'] or run['ref']} at {run['sha'][:12]}"
        + (f" by {run['actor']}" if run["actor"] else ""),
        file=out,
    )
    if run.get("error"):
        print(f"error: {run['error']}", file=out)
    rows = [
        [str(job["id"]), job["state"], job["name"], _duration(job.get("duration_seconds"))]
        for job in answer["jobs"]
    ]
    if rows:
        _table(["JOB", "STATE", "NAME", "TOOK"], rows, out)
    else:
        print("no jobs", file=out)
    return EXIT_OK


def cancel_command(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    run = client.post(f"runs/{args.run_id}/cancel")["run"]
    print(f"run {run['id']} ({run['repository']} #{run['number']}): {run['state']}", file=out)
    if run["state"] != "cancelled":
        print("running jobs stop as soon as their workers notice", file=err)
    return EXIT_OK


def rerun_command(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    path = f"runs/{args.run_id}/rerun-failed" if args.failed else f"runs/{args.run_id}/rerun"
    run = client.post(path)["run"]
    print(
        f"run {run['id']} ({run['repository']} #{run['number']}) attempt {run['attempt']}: "
        f"{run['state']}",
        file=out,
    )
    return EXIT_OK


def dispatch_command(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    inputs = {}
    for item in args.inputs:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise UsageError(f"--input {item!r} is not NAME=VALUE")
        inputs[name] = value
    body: dict[str, object] = {"workflow": args.workflow, "inputs": inputs}
    if args.ref:
        body["ref"] = args.ref
    if args.request_id:
        body["request_id"] = args.request_id
    organisation, _, repository = args.repository.partition("/")
    run = client.post(f"repos/{_segment(organisation)}/{_segment(repository)}/dispatches", body)
    print(f"run {run['id']} ({run['repository']} #{run['number']}): {run['state']}", file=out)
    return EXIT_OK


# ---------------------------------------------------------------------------- environments


def review_command(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """`cicd approve` and `cicd reject`."""
    answer = client.post(f"jobs/{args.job_id}/{args.command}", {"comment": args.comment})
    job, gate = answer["job"], answer["gate"]
    verb = "approved" if args.command == "approve" else "rejected"
    print(
        f"job {job['id']} ({job['name']}) at {gate['environment']}: {verb}; the job is "
        f"{job['state']}",
        file=out,
    )
    if job["state"] == "waiting":
        approvals = [a for a in gate["approvals"] if a["decision"] == "approved"]
        print(
            f"still waiting: {len(approvals)} approval(s) so far; it may also wait for the "
            f"environment's wait timer (until {_when(gate['wait_until'])})",
            file=err,
        )
    elif job["state"] == "failure" and job.get("error"):
        print(job["error"], file=err)
    return EXIT_OK


def environments_command(
    client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO
) -> int:
    answer = client.get(f"{_repository_path(args.repository)}/environments")
    rows = []
    for environment in answer["environments"]:
        current = environment["current"]
        rules = environment["rules"]
        rows.append(
            [
                environment["name"],
                _version(current) if current else "-",
                _rules_text(rules),
                str(environment["waiting"]),
                f"#{environment['lock']['deployment']}" if environment["lock"] else "-",
                environment["url"] or "-",
            ]
        )
    if not rows:
        print("no environments (a job with `environment:` creates its own)", file=err)
        return EXIT_OK
    _table(["ENVIRONMENT", "CURRENT", "RULES", "WAITING", "DEPLOYING", "URL"], rows, out)
    return EXIT_OK


def deployments_command(
    client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO
) -> int:
    path = f"{_repository_path(args.repository)}/environments/{_segment(args.environment)}"
    answer = client.get(f"{path}/deployments", {"limit": args.limit, "after": args.after})
    rows = [
        [
            str(deployment["id"]),
            deployment["state"],
            deployment["strategy"],
            _version(deployment),
            (
                f"rollback of #{deployment['rollback_of']}"
                if deployment["rollback_of"]
                else f"run #{deployment['run_number']}"
                if deployment["run_number"]
                else "-"
            ),
            deployment["triggered_by"] or "-",
            _when(deployment.get("started_at") or deployment.get("created_at")),
            _duration(deployment.get("duration_seconds")),
            deployment["reason"].splitlines()[0][:60] if deployment["reason"] else "",
        ]
        for deployment in answer["deployments"]
    ]
    if not rows:
        print(f"no deployments to {args.environment}", file=err)
        return EXIT_OK
    _table(
        ["ID", "STATE", "STRATEGY", "VERSION", "FROM", "BY", "STARTED", "TOOK", "REASON"],
        rows,
        out,
    )
    if answer.get("next"):
        print(f"more: add --after {answer['next']}", file=err)
    return EXIT_OK


def rollback_command(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    path = f"{_repository_path(args.repository)}/environments/{_segment(args.environment)}"
    deployment = client.post(f"{path}/rollback", {"skip_analysis": args.skip_analysis})[
        "deployment"
    ]
    print(
        f"deployment {deployment['id']}: rolling {deployment['environment']} back to "
        f"{_version(deployment)} (the version of deployment #{deployment['rollback_of']}): "
        f"{deployment['state']}",
        file=out,
    )
    print(
        f"follow it with: cicd deployments {args.repository} {args.environment}",
        file=err,
    )
    return EXIT_OK


def _repository_path(full_name: str) -> str:
    organisation, slash, repository = full_name.partition("/")
    if not slash or not organisation or not repository or "/" in repository:
        raise UsageError(f"the repository must be organisation/repository, not {full_name!r}")
    return f"repos/{_segment(organisation)}/{_segment(repository)}"


def _version(deployment: Mapping[str, Any]) -> str:
    digest = deployment.get("image_digest") or ""
    sha = (deployment.get("sha") or "")[:7]
    shown = digest[:19] if digest else deployment.get("image") or "?"
    return f"{shown} ({sha})" if sha else shown


def _rules_text(rules: Mapping[str, Any]) -> str:
    parts = []
    if rules["required_approvals"]:
        parts.append(f"{rules['required_approvals']} approval(s)")
    if rules["allowed_refs"]:
        parts.append("refs " + ",".join(rules["allowed_refs"]))
    if rules["wait_timer_minutes"]:
        parts.append(f"wait {rules['wait_timer_minutes']}m")
    return "; ".join(parts) or "none"


# ---------------------------------------------------------------------------------- logs


def logs_command(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    spinner = Spinner(err) if args.follow and _is_tty(out) and _is_tty(err) else None
    follower = LogFollower(client, args.job_id, err=err)
    state = ""
    if args.follow:
        job = client.get(f"jobs/{args.job_id}")["job"]
        state = job["state"]
        print(f"following job {job['id']} ({job['name']}): {state}", file=err)
    for page in follower.pages(follow=args.follow, on_wait=spinner.tick if spinner else None):
        if spinner:
            spinner.clear()
        for line in page["lines"]:
            out.write(format_line(line, timestamps=args.timestamps))
        out.flush()
        if args.follow and page["state"] != state:
            print(f"job {args.job_id}: {page['state']}", file=err)
        state = page["state"]
    if spinner:
        spinner.clear()
    if not args.follow:
        return EXIT_OK
    print(f"job {args.job_id} ended: {state}", file=err)
    return EXIT_OK if state in SUCCESSFUL_ENDINGS else EXIT_REFUSED


class LogFollower:
    """Pages of a job's log from offset 0. Each request names the offset it wants, and the
    offset only moves past lines that were handed out, so a retried request (after a dropped
    connection, a cut-off body, a 5xx, a server restart) neither skips nor repeats a line."""

    def __init__(
        self,
        client: Client,
        job_id: int,
        *,
        err: TextIO,
        poll_seconds: float = FOLLOW_POLL_SECONDS,
        retry_for: float = RETRY_FOR_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.err = err
        self.poll_seconds = poll_seconds
        self.retry_for = retry_for
        self.sleep = sleep
        self.offset = 0

    def pages(
        self, *, follow: bool, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[dict[str, Any]]:
        while True:
            page = self._fetch()
            if page["offset"] != self.offset or page["next_offset"] < self.offset:
                raise Unavailable(f"the server answered offset {page['offset']}, not {self.offset}")
            self.offset = page["next_offset"]
            yield page
            if page["complete"]:
                return
            if len(page["lines"]) >= LOG_PAGE:
                continue  # more is waiting: no pause
            if not follow:
                return  # a partial page is the end of what is stored
            if on_wait is not None:
                on_wait(page["state"])
            self.sleep(self.poll_seconds)

    def _fetch(self) -> dict[str, Any]:
        path = f"jobs/{self.job_id}/logs"
        params = {"offset": self.offset, "limit": LOG_PAGE}
        delay = RETRY_FIRST_DELAY
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                return self.client.get(path, params)
            except Unavailable as error:
                if time.monotonic() + delay > deadline:
                    raise
                print(f"{error}; retrying in {delay:g}s from line {self.offset + 1}", file=self.err)
                self.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)


_MARKERS = {"error": "Error: ", "warning": "Warning: ", "notice": "Notice: ", "group": "▶ "}


def format_line(line: Mapping[str, Any], *, timestamps: bool = False) -> str:
    stream = line.get("stream")
    if stream == "endgroup":
        return ""
    text = f"{_MARKERS.get(str(stream), '')}{line.get('text', '')}"
    if stream in ("error", "warning", "notice") and line.get("properties"):
        where = line["properties"]
        location = ":".join(str(where[key]) for key in ("file", "line") if where.get(key))
        if location:
            text = f"{text} ({location})"
    if timestamps:
        text = f"{line.get('ts') or '-'} {text}"
    return text + "\n"


class Spinner:
    """A one-line status on stderr while `logs --follow` waits, erased before lines print."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.frames = itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
        self.shown = False

    def tick(self, state: str) -> None:
        self.err.write(f"\r\x1b[K{next(self.frames)} {state}")
        self.err.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.shown = False


# -------------------------------------------------------------------------------- output


def _table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
