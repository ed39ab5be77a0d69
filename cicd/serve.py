"""`cicd serve`: the whole system in the foreground, for the embedded default and small installs.

It migrates the database, makes sure an admin account exists, then supervises child processes:
daphne (web and WebSockets), a control worker (control queue, beat scheduler) and the job workers
(jobs queue).
When one child dies the others are stopped too, so a half-running system never goes unnoticed;
SIGINT/SIGTERM stop everything (TERM, then KILL after a grace period).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

ADMIN_USERNAME = "admin"
STOP_GRACE_SECONDS = 10.0


@dataclass(slots=True)
class AdminLogin:
    username: str
    password: str | None  # None: an account existed already and its password is not known here


@dataclass(slots=True)
class Supervisor:
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    stopping: bool = False

    def start(self, name: str, argv: list[str]) -> None:
        # Own session per child: a terminal Ctrl-C reaches only us, and we stop them in order.
        self.children[name] = subprocess.Popen(argv, start_new_session=True)

    def first_exited(self) -> tuple[str, int] | None:
        for name, child in self.children.items():
            code = child.poll()
            if code is not None:
                return name, code
        return None

    def stop_all(self) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children.values():
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def serve(*, host: str | None, port: int | None, worker_processes: int | None) -> int:
    host = host or settings.CICD_BIND_HOST
    port = settings.CICD_PORT if port is None else port
    worker_processes = worker_processes or settings.CICD_WORKERS
    if not 0 <= port <= 65535:
        print(f"cicd: port {port} is out of range (0-65535)", file=sys.stderr)
        return 2
    if port == 0:
        port = _free_port(host)
    elif not _port_is_free(host, port):
        print(
            f"cicd: {host}:{port} is already in use; pass --port or set CICD_PORT",
            file=sys.stderr,
        )
        return 2

    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    login = ensure_admin(settings.CICD_DATA_DIR)

    supervisor = Supervisor()
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    python = sys.executable
    supervisor.start(
        "web",
        [python, "-m", "daphne", "-b", host, "-p", str(port), "cicd.asgi:application"],
    )
    # Control tasks (scheduling, reaping, cancels) get a worker of their own, so that a backlog
    # of builds never delays them; threads keep it to one small process. It also runs beat.
    supervisor.start(
        "control",
        [
            python, "-m", "celery", "-A", "cicd", "worker",
            "--queues", settings.CELERY_QUEUE_CONTROL,
            "--pool", "threads", "--concurrency", "4",
            "--hostname", "control@%h",
            "--loglevel", settings.LOG_LEVEL,
            "--without-mingle", "--without-gossip",
            "--beat", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME,
        ],
    )  # fmt: skip
    for index in range(worker_processes):
        supervisor.start(
            f"worker{index + 1}",
            [
                python, "-m", "celery", "-A", "cicd", "worker",
                "--queues", settings.CELERY_QUEUE_JOBS,
                "--concurrency", str(settings.CICD_WORKER_CONCURRENCY),
                "--hostname", f"worker{index + 1}@%h",
                "--loglevel", settings.LOG_LEVEL,
                "--without-mingle", "--without-gossip",
            ],
        )  # fmt: skip

    url = settings.CICD_PUBLIC_URL or f"http://{_display_host(host)}:{port}/"
    if not _wait_for_port(host, port, supervisor):
        supervisor.stop_all()
        print("cicd: the web server did not start; see its output above", file=sys.stderr)
        return 1
    _announce_worker_check()
    _print_banner(url, login, worker_processes)

    exit_code = 0
    while not stop_requested:
        exited = supervisor.first_exited()
        if exited:
            name, code = exited
            print(f"cicd: {name} exited with status {code}; stopping the rest", file=sys.stderr)
            exit_code = 1
            break
        time.sleep(0.2)
    supervisor.stop_all()
    return exit_code


def ensure_admin(data_dir: Path) -> AdminLogin:
    """Create the first admin account, once. Its password is kept (0600) in the data directory."""
    from django.contrib.auth import get_user_model

    password_file = data_dir / "admin-password"
    user_model = get_user_model()
    if not user_model.objects.filter(is_superuser=True).exists():
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(ADMIN_USERNAME, "", password)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password + "\n")
        return AdminLogin(ADMIN_USERNAME, password)
    try:
        remembered = password_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return AdminLogin(ADMIN_USERNAME, None)
    admin = user_model.objects.filter(username=ADMIN_USERNAME, is_superuser=True).first()
    if admin is not None and admin.check_password(remembered):
        return AdminLogin(ADMIN_USERNAME, remembered)
    return AdminLogin(ADMIN_USERNAME, None)


def _announce_worker_check() -> None:
    """Send one ping through the queue so /healthz shows the worker path working end to end."""
    from cicd.tasks import ping

    ping.delay("serve-startup")


def _print_banner(url: str, login: AdminLogin, worker_processes: int) -> None:
    mode = "embedded (SQLite, no Redis)" if settings.EMBEDDED else "scaled (Redis)"
    lines = [
        "",
        f"cicd is running at {url}",
        f"  admin: {url}admin/",
        (
            f"  login: {login.username} / {login.password}"
            if login.password
            else "  login: your existing admin account (password not stored here)"
        ),
        f"  mode: {mode}, database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}",
        f"  workers: {worker_processes}; data: {settings.CICD_DATA_DIR}",
        "  stop with Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)


def _display_host(host: str) -> str:
    if host in {"0.0.0.0", "::", ""}:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _wait_for_port(host: str, port: int, supervisor: Supervisor, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    connect_host = _display_host(host).strip("[]")
    while time.monotonic() < deadline:
        if supervisor.children["web"].poll() is not None:
            return False
        try:
            with socket.create_connection((connect_host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
