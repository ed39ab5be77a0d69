"""Django settings for cicd.

Every piece of configuration comes from an environment variable read here, through the small
helpers below, which raise ImproperlyConfigured with the variable's name and the accepted form when
a value is wrong: a typo must stop the server at start, never silently disable something.
Each variable may also be given as `NAME_FILE` (a path whose content is the value), for secrets
mounted by Docker or systemd.

Two shapes, same code:
- embedded (default): SQLite under CICD_DATA_DIR, Celery over kombu's filesystem transport,
  in-memory channel layer, file-based cache. Nothing to install or run besides this process tree.
- scaled: DATABASE_URL=postgres://..., REDIS_URL=redis://... (Celery broker, channel layer, cache).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from cicd.storage_config import blob_storage_settings

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off", ""}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_str(name: str, default: str | None = None) -> str | None:
    """The variable's value, or the content of the file named by NAME_FILE, or the default."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use true or false")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env_str(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is too small; the minimum is {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = env_str(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is too small; the minimum is {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env_str(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().upper() if choices == LOG_LEVELS else raw.strip()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of: {', '.join(choices)}")
    return value


def _data_dir() -> Path:
    raw = env_str("CICD_DATA_DIR")
    if raw:
        path = Path(raw).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(xdg) / "cicd"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(f"CICD_DATA_DIR={str(path)!r} cannot be created: {exc}") from exc
    if not os.access(path, os.W_OK):
        raise ImproperlyConfigured(f"CICD_DATA_DIR={str(path)!r} is not writable")
    return path.resolve()


def _secret_key(data_dir: Path) -> str:
    """SECRET_KEY from the environment, or one generated once and kept in the data directory."""
    given = env_str("SECRET_KEY")
    if given:
        if len(given) < 32:
            raise ImproperlyConfigured("SECRET_KEY is shorter than 32 characters")
        return given
    key_file = data_dir / "secret_key"
    try:
        return key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(50)
    # O_EXCL: when several processes start at once, exactly one writes the key, the others read it.
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key)
    return key


def _database(data_dir: Path) -> dict:
    raw = env_str("DATABASE_URL")
    url = raw.strip() if raw else f"sqlite:///{data_dir / 'cicd.sqlite3'}"
    scheme = urlsplit(url).scheme
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {scheme!r} is not supported; "
            "use sqlite:///path/to/file.sqlite3 or postgres://user@host:port/name"
        )
    try:
        config = dj_database_url.parse(
            url,
            conn_max_age=env_int("CICD_DB_CONN_MAX_AGE", 60, minimum=0),
            conn_health_checks=True,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL cannot be parsed: {exc}") from exc
    if config["ENGINE"] == "django.db.backends.sqlite3":
        if not config.get("NAME") or config["NAME"] == ":memory:":
            raise ImproperlyConfigured("DATABASE_URL for SQLite must name a file")
        # Several processes (web, worker, beat) share the file: WAL lets readers run beside the
        # one writer, and IMMEDIATE transactions take the write lock up front so two writers
        # queue on busy_timeout instead of failing with "database is locked" mid-transaction.
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # Tests use a file as well: Django's default in-memory test database shares one cache
        # between threads, whose table locks fail a writer at once instead of making it wait.
        config["TEST"] = {"NAME": str(data_dir / "test.sqlite3")}
    pool_size = env_int("CICD_DB_POOL_SIZE", 0, minimum=0)
    if pool_size and config["ENGINE"] == "django.db.backends.postgresql":
        # Django's pool (psycopg_pool): a connection "closed" at the end of a request or of a
        # live-log read goes back to the pool instead of being torn down, which a thread per
        # request otherwise forces (CICD_DB_CONN_MAX_AGE=0). Pooling excludes persistent
        # connections; idle ones are closed after a minute, so a quiet server holds one. No
        # health check on every checkout (a query each time: 10 % of the web process under the
        # live-log benchmark); psycopg_pool discards a connection that broke when it returns.
        config["CONN_MAX_AGE"] = 0
        config["CONN_HEALTH_CHECKS"] = False
        config["OPTIONS"] = {
            **config.get("OPTIONS", {}),
            "pool": {"min_size": 1, "max_size": pool_size, "max_idle": 60, "timeout": 10},
        }
    config.setdefault("TEST", {})
    return config


def _redis_url() -> str | None:
    raw = env_str("REDIS_URL")
    if not raw:
        return None
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"REDIS_URL scheme {parts.scheme!r} is not supported; use redis://host:port/db"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ImproperlyConfigured(f"REDIS_URL={raw!r} has no host")
    return raw.strip()


CICD_DATA_DIR = _data_dir()
SECRET_KEY = _secret_key(CICD_DATA_DIR)
DEBUG = env_bool("CICD_DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
LOG_LEVEL = env_choice("CICD_LOG_LEVEL", "INFO", LOG_LEVELS)
REDIS_URL = _redis_url()
EMBEDDED = REDIS_URL is None

# `cicd serve`: where the web server listens and how many worker processes it starts.
CICD_BIND_HOST = env_str("CICD_BIND_HOST", "127.0.0.1")
CICD_PORT = env_int("CICD_PORT", 8000, minimum=0)
CICD_WORKERS = env_int("CICD_WORKERS", 1, minimum=1)
CICD_WORKER_CONCURRENCY = env_int("CICD_WORKER_CONCURRENCY", 2, minimum=1)
CICD_PUBLIC_URL = env_str("CICD_PUBLIC_URL", "")

# Job execution (SPEC 5). Per-runner settings: each worker host may set its own.
CICD_EXECUTOR = env_choice("CICD_EXECUTOR", "auto", ("auto", "docker", "local"))
CICD_DEFAULT_IMAGE = env_str("CICD_DEFAULT_IMAGE", "debian:bookworm-slim")
CICD_JOB_MEMORY_MB = env_int("CICD_JOB_MEMORY_MB", 4096, minimum=16)
CICD_JOB_CPUS = env_float("CICD_JOB_CPUS", 2.0, minimum=0.1)
CICD_JOB_PIDS = env_int("CICD_JOB_PIDS", 1024, minimum=16)
CICD_ALLOW_PRIVILEGED = env_bool("CICD_ALLOW_PRIVILEGED", False)
CICD_KILL_GRACE_SECONDS = env_float("CICD_KILL_GRACE_SECONDS", 10.0, minimum=0.0)
CICD_STEP_OUTPUT_CAP_MB = env_float("CICD_STEP_OUTPUT_CAP_MB", 10.0, minimum=0.001)
CICD_ORPHAN_AGE_SECONDS = env_float("CICD_ORPHAN_AGE_SECONDS", 7 * 3600.0, minimum=60.0)
CICD_REAP_EVERY_SECONDS = env_float("CICD_REAP_EVERY_SECONDS", 600.0, minimum=10.0)
CICD_WORK_DIR = CICD_DATA_DIR / "work"  # local executor: one directory per job

# Secrets at rest: Fernet keys, comma-separated, newest first (older ones still decrypt, for
# rotation). Without it a key is derived from SECRET_KEY, so changing SECRET_KEY then loses them.
CICD_SECRETS_KEYS = env_list("CICD_SECRETS_KEY", [])

# Orchestration (SPEC 4): a worker holds a job for CICD_LEASE_SECONDS and renews it every
# CICD_HEARTBEAT_SECONDS; a job whose lease ran out is given to another worker.
CICD_LEASE_SECONDS = env_float("CICD_LEASE_SECONDS", 60.0, minimum=1.0)
CICD_HEARTBEAT_SECONDS = env_float("CICD_HEARTBEAT_SECONDS", 10.0, minimum=0.1)
if CICD_HEARTBEAT_SECONDS >= CICD_LEASE_SECONDS:
    raise ImproperlyConfigured(
        f"CICD_HEARTBEAT_SECONDS={CICD_HEARTBEAT_SECONDS:g} must be shorter than "
        f"CICD_LEASE_SECONDS={CICD_LEASE_SECONDS:g}, or every lease would expire"
    )
# The reaper (runs.reaper) runs every CICD_REAP_LEASES_SECONDS; a job whose worker was lost is
# requeued until it has been claimed CICD_MAX_JOB_CLAIMS times, then fails.
CICD_REAP_LEASES_SECONDS = env_float("CICD_REAP_LEASES_SECONDS", 5.0, minimum=0.1)
CICD_MAX_JOB_CLAIMS = env_int("CICD_MAX_JOB_CLAIMS", 3, minimum=1)
# A running job's worker looks this often for a cancel request (cheaper than a heartbeat), so a
# cancel stops the executor within a second or two whatever the heartbeat interval.
CICD_CANCEL_POLL_SECONDS = env_float("CICD_CANCEL_POLL_SECONDS", 1.0, minimum=0.1)
# Dispatch (runs.claims.claim_next): a queued job gains one priority point per
# CICD_PRIORITY_AGING_SECONDS waited, so low priorities cannot starve.
CICD_PRIORITY_AGING_SECONDS = env_float("CICD_PRIORITY_AGING_SECONDS", 60.0, minimum=1.0)


def _worker_labels() -> list[str]:
    """The runs-on labels this worker offers: the configured ones plus, always, its host name."""
    labels = env_list("CICD_WORKER_LABELS", ["self-hosted", "linux", "x64", "ubuntu-latest"])
    seen: dict[str, str] = {}
    for label in [*labels, socket.gethostname()]:
        seen.setdefault(label.lower(), label)
    return list(seen.values())


CICD_WORKER_LABELS = _worker_labels()

# The workflow language's limits (SPEC 3).
CICD_MATRIX_CAP = env_int("CICD_MATRIX_CAP", 256, minimum=1)
CICD_WORKFLOW_MAX_BYTES = env_int("CICD_WORKFLOW_MAX_BYTES", 512 * 1024, minimum=1024)

# Triggers (SPEC 6). Webhook bodies over CICD_WEBHOOK_MAX_MB are refused (413) before parsing.
# Each repository may deliver CICD_WEBHOOK_RATE webhooks per second on average and
# CICD_WEBHOOK_BURST at once (a token bucket, in Redis when REDIS_URL is set, else in the
# database); beyond that 429 with Retry-After. A rate of 0 turns the limit off.
CICD_WEBHOOK_MAX_MB = env_float("CICD_WEBHOOK_MAX_MB", 25.0, minimum=0.001)
CICD_WEBHOOK_RATE = env_float("CICD_WEBHOOK_RATE", 20.0, minimum=0.0)
CICD_WEBHOOK_BURST = env_int("CICD_WEBHOOK_BURST", 200, minimum=1)
# A stored delivery not processed after this long (its Celery message lost, or processing
# failed) is processed again by the periodic sweeper, at most CICD_WEBHOOK_MAX_ATTEMPTS times.
CICD_WEBHOOK_RETRY_SECONDS = env_float("CICD_WEBHOOK_RETRY_SECONDS", 60.0, minimum=1.0)
CICD_WEBHOOK_MAX_ATTEMPTS = env_int("CICD_WEBHOOK_MAX_ATTEMPTS", 10, minimum=1)
# `on.schedule`: the scheduler looks every CICD_SCHEDULE_TICK_SECONDS at the minutes since its
# previous look (at most CICD_SCHEDULE_CATCHUP_MINUTES back, so a stopped server does not
# start a day of missed runs when it comes back).
CICD_SCHEDULE_TICK_SECONDS = env_float("CICD_SCHEDULE_TICK_SECONDS", 15.0, minimum=1.0)
CICD_SCHEDULE_CATCHUP_MINUTES = env_int("CICD_SCHEDULE_CATCHUP_MINUTES", 5, minimum=1)

# Artifacts (SPEC 8): an upload larger than CICD_ARTIFACT_MAX_MB (its files, before compression)
# fails its step; artifacts are kept CICD_ARTIFACT_RETENTION_DAYS unless the step asks for
# `retention-days`, which is capped at CICD_ARTIFACT_MAX_RETENTION_DAYS.
CICD_ARTIFACT_MAX_MB = env_float("CICD_ARTIFACT_MAX_MB", 1024.0, minimum=0.001)
CICD_ARTIFACT_RETENTION_DAYS = env_int("CICD_ARTIFACT_RETENTION_DAYS", 30, minimum=1)
CICD_ARTIFACT_MAX_RETENTION_DAYS = env_int("CICD_ARTIFACT_MAX_RETENTION_DAYS", 90, minimum=1)
if CICD_ARTIFACT_RETENTION_DAYS > CICD_ARTIFACT_MAX_RETENTION_DAYS:
    raise ImproperlyConfigured(
        f"CICD_ARTIFACT_RETENTION_DAYS={CICD_ARTIFACT_RETENTION_DAYS} is over "
        f"CICD_ARTIFACT_MAX_RETENTION_DAYS={CICD_ARTIFACT_MAX_RETENTION_DAYS}"
    )
# Content-addressed blobs (artifact and cache archives), through Django's storage API
# (runs.storage): files under the data directory, or S3-compatible object storage when
# CICD_STORAGE_URL is set: s3://[KEY:SECRET@]bucket[/prefix][?endpoint_url=...&region=...
# &addressing_style=...] or file:///directory (forms and errors: cicd/storage_config.py).
CICD_BLOB_DIR = CICD_DATA_DIR / "blobs"
CICD_STORAGE_URL = env_str("CICD_STORAGE_URL", "") or ""
_BLOB_STORAGE = blob_storage_settings(CICD_STORAGE_URL, CICD_BLOB_DIR)

# Caches (SPEC 8, actions/cache): one entry's archive may hold at most CICD_CACHE_ENTRY_MAX_MB;
# beyond CICD_CACHE_REPO_MAX_GB per repository the least recently used entries are evicted;
# entries unused for CICD_CACHE_UNUSED_DAYS are removed by retention.
CICD_CACHE_ENTRY_MAX_MB = env_float("CICD_CACHE_ENTRY_MAX_MB", 5 * 1024.0, minimum=0.001)
CICD_CACHE_REPO_MAX_GB = env_float("CICD_CACHE_REPO_MAX_GB", 10.0, minimum=0.000001)
CICD_CACHE_UNUSED_DAYS = env_int("CICD_CACHE_UNUSED_DAYS", 7, minimum=1)

# Retention (runs.retention): logs are removed CICD_LOG_RETENTION_DAYS after their run finished;
# job workspaces left behind (a worker that died) after CICD_WORKSPACE_ORPHAN_HOURS; blobs no
# artifact or cache refers to once CICD_BLOB_PRUNE_GRACE_MINUTES passed since they were stored
# (an upload in progress has stored its blob but not yet its row). Beat runs the whole cleanup
# every CICD_RETENTION_INTERVAL_MINUTES.
CICD_LOG_RETENTION_DAYS = env_int("CICD_LOG_RETENTION_DAYS", 30, minimum=1)
CICD_WORKSPACE_ORPHAN_HOURS = env_float("CICD_WORKSPACE_ORPHAN_HOURS", 24.0, minimum=0.01)
CICD_BLOB_PRUNE_GRACE_MINUTES = env_float("CICD_BLOB_PRUNE_GRACE_MINUTES", 60.0, minimum=0.0)
CICD_RETENTION_INTERVAL_MINUTES = env_float("CICD_RETENTION_INTERVAL_MINUTES", 60.0, minimum=1.0)
# Environments and deployments (SPEC 9). Beat re-checks the jobs waiting at an environment (wait
# timers) and fails deployments whose worker died every CICD_GATE_SWEEP_SECONDS. A deployment
# holds its environment's lock as a lease of CICD_DEPLOY_LOCK_SECONDS, renewed every third of it:
# a worker that dies frees the environment that long after its last renewal. The deployment
# engine keeps its HAProxy configurations and state under CICD_DEPLOY_DIR.
CICD_GATE_SWEEP_SECONDS = env_float("CICD_GATE_SWEEP_SECONDS", 5.0, minimum=0.1)
CICD_DEPLOY_LOCK_SECONDS = env_float("CICD_DEPLOY_LOCK_SECONDS", 60.0, minimum=1.0)
CICD_DEPLOY_DIR = CICD_DATA_DIR / "deploy"
# /metrics answers staff users (session or bearer token); public when this is true (it names
# repositories and workers, so only where the network is trusted).
CICD_METRICS_PUBLIC = env_bool("CICD_METRICS_PUBLIC", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "cicd",
    "pipelines",
    "runs",
    "runners",
    "webhooks",
    "deployments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cicd.urls"
ASGI_APPLICATION = "cicd.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": _database(CICD_DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = CICD_DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Plain storage, not the manifest one: the embedded default must serve without a
    # collectstatic step having run; whitenoise finds files in the app folders (autorefresh).
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    # Where runs.storage keeps blobs: CICD_BLOB_DIR, or S3 through django-storages.
    "blobs": _BLOB_STORAGE,
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"


def redis_channel_layer(url: str) -> dict:
    """The Channels layer on Redis. channels_redis waits for messages with a blocking pop of up
    to 5 s; redis-py 8 gives every socket a 5 s read timeout by default, so an idle wait raised
    TimeoutError and closed the viewer's WebSocket (1011) about every 5 s. The read timeout must
    outlast the blocking pop; a finite one still notices a Redis that went away."""
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": url, "socket_timeout": 15}]},
    }


if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
else:
    # File-based so that web, worker and beat processes see one cache without a server.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(CICD_DATA_DIR / "cache"),
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: the database is the source of truth; the broker only delivers (DEVELOPERS.md).
CELERY_QUEUE_CONTROL = "control"
CELERY_QUEUE_JOBS = "jobs"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
else:
    _queue_dir = CICD_DATA_DIR / "queue"
    for _sub in ("messages", "processed", "control"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "messages"),
        "data_folder_out": str(_queue_dir / "messages"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
        # kombu polls the folder; a short interval keeps push-to-start latency low.
        "polling_interval": env_float("CICD_QUEUE_POLL_SECONDS", 0.1, minimum=0.01),
    }
CELERY_TASK_DEFAULT_QUEUE = CELERY_QUEUE_CONTROL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(CICD_DATA_DIR / "celerybeat-schedule")
CICD_WORKER_PING_SECONDS = env_float("CICD_WORKER_PING_SECONDS", 15.0, minimum=1.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": max(logging.getLevelName(LOG_LEVEL), logging.INFO)},
    },
}
