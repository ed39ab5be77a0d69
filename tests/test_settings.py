"""Settings come from the environment; bad values stop the process with a message naming them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

PRINT_SETTINGS = (
    "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='cicd.settings';"
    "from django.conf import settings as s;"
    "print(s.SECRET_KEY); print(s.DATABASES['default']['ENGINE']); print(s.EMBEDDED);"
    "print(s.CELERY_BROKER_URL); print(s.LOG_LEVEL); print(s.ALLOWED_HOSTS)"
)
CLEAN_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "CICD_LOG_LEVEL")


def load_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_NAMES}
    child_env["CICD_DATA_DIR"] = str(tmp_path / "data")
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_default_uses_sqlite_in_the_data_dir_and_the_filesystem_queue(tmp_path):
    result = load_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    _key, engine, embedded, broker, level, hosts = result.stdout.splitlines()
    assert engine == "django.db.backends.sqlite3"
    assert embedded == "True"
    assert broker.startswith("filesystem://")
    assert level == "INFO"
    assert "localhost" in hosts
    assert (tmp_path / "data" / "queue" / "messages").is_dir()


def test_secret_key_is_generated_once_and_kept_private(tmp_path):
    first = load_settings(tmp_path)
    second = load_settings(tmp_path)
    assert first.returncode == 0, first.stderr
    key = first.stdout.splitlines()[0]
    assert len(key) >= 50
    assert second.stdout.splitlines()[0] == key
    key_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_secret_key_can_come_from_a_file(tmp_path):
    secret_file = tmp_path / "key"
    secret_file.write_text("k" * 40 + "\n")
    result = load_settings(tmp_path, SECRET_KEY_FILE=str(secret_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "k" * 40


def test_scaled_setup_from_urls(tmp_path):
    result = load_settings(
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/3",
        CICD_LOG_LEVEL="debug",
        ALLOWED_HOSTS="ci.example.org, localhost",
    )
    assert result.returncode == 0, result.stderr
    _, engine, embedded, broker, level, hosts = result.stdout.splitlines()
    assert engine == "django.db.backends.postgresql"
    assert embedded == "False"
    assert broker == "redis://127.0.0.1:6379/3"
    assert level == "DEBUG"
    assert hosts == "['ci.example.org', 'localhost']"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "mysql://root@localhost/x"}, "DATABASE_URL scheme 'mysql'"),
        ({"DATABASE_URL": "sqlite://:memory:"}, "DATABASE_URL for SQLite must name a file"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL scheme 'http'"),
        ({"REDIS_URL": "redis://"}, "has no host"),
        ({"CICD_LOG_LEVEL": "LOUD"}, "CICD_LOG_LEVEL='LOUD' is not one of"),
        ({"CICD_PORT": "eighty"}, "CICD_PORT='eighty' is not a whole number"),
        ({"CICD_MATRIX_CAP": "0"}, "CICD_MATRIX_CAP=0 is too small"),
        ({"CICD_DEBUG": "maybe"}, "CICD_DEBUG='maybe' is not a boolean"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY is shorter than 32 characters"),
        ({"SECRET_KEY_FILE": "/nonexistent/key"}, "SECRET_KEY_FILE='/nonexistent/key' cannot"),
    ],
)
def test_bad_values_stop_with_a_message_naming_the_variable(tmp_path, env, expected):
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert expected in result.stderr


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = load_settings(tmp_path, CICD_DATA_DIR=str(not_a_dir))
    assert result.returncode != 0
    assert f"CICD_DATA_DIR={str(not_a_dir)!r} cannot be created" in result.stderr


def test_cli_reports_configuration_errors_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_NAMES}
    env.update(CICD_DATA_DIR=str(tmp_path), REDIS_URL="amqp://nope")
    result = subprocess.run(
        [sys.executable, "-m", "cicd.cli", "manage", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("cicd: configuration error: REDIS_URL scheme 'amqp'")
    assert "Traceback" not in result.stderr
