"""CICD_STORAGE_URL: each accepted form gives the STORAGES["blobs"] entry it should, and each
mistake stops the server with a message naming the variable and what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from cicd.storage_config import MAX_MEMORY_BYTES, S3_BACKEND, blob_storage_settings

BLOB_DIR = Path("/var/lib/cicd/blobs")
S3_DEFAULTS = {"file_overwrite": True, "default_acl": None, "max_memory_size": MAX_MEMORY_BYTES}


def s3_options(url: str) -> dict:
    entry = blob_storage_settings(url, BLOB_DIR)
    assert entry["BACKEND"] == S3_BACKEND
    return entry["OPTIONS"]


@pytest.mark.parametrize("url", ["", "   "])
def test_no_url_keeps_blobs_in_the_blob_directory(url):
    assert blob_storage_settings(url, BLOB_DIR) == {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": "/var/lib/cicd/blobs"},
    }


def test_a_file_url_names_another_directory():
    entry = blob_storage_settings("file:///srv/ci%20blobs/", BLOB_DIR)
    assert entry == {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": "/srv/ci blobs"},
    }


def test_aws_needs_only_the_bucket_and_takes_credentials_from_the_environment():
    # No access_key/secret_key: django-storages then asks boto3, which reads
    # AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role.
    assert s3_options("s3://cicd-blobs") == {
        "bucket_name": "cicd-blobs",
        "location": "",
        **S3_DEFAULTS,
    }


def test_an_s3_compatible_server_with_a_prefix_region_and_credentials():
    options = s3_options(
        "s3://AKIA1:se%2Fcr%2Bet@ci.blobs/team/a/blobs/"
        "?endpoint_url=http://127.0.0.1:9000&region=eu-west-1"
    )
    assert options == {
        "bucket_name": "ci.blobs",
        "location": "team/a/blobs",
        "endpoint_url": "http://127.0.0.1:9000",
        "region_name": "eu-west-1",
        # Most S3-compatible servers (MinIO, Ceph, moto) address buckets in the path.
        "addressing_style": "path",
        "access_key": "AKIA1",
        "secret_key": "se/cr+et",
        **S3_DEFAULTS,
    }


def test_the_addressing_style_can_be_chosen():
    options = s3_options("s3://b-1/?endpoint_url=https://s3.example.org/&addressing_style=virtual")
    assert (options["endpoint_url"], options["addressing_style"]) == (
        "https://s3.example.org",
        "virtual",
    )
    assert s3_options("s3://b-1?addressing_style=path")["addressing_style"] == "path"
    assert "addressing_style" not in s3_options("s3://b-1?region=us-east-1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/blobs", "CICD_STORAGE_URL has scheme 'ftp'; use s3://bucket/prefix"),
        ("/srv/blobs", "CICD_STORAGE_URL has no scheme; use s3://bucket/prefix"),
        ("file://srv/blobs", "a file URL names an absolute directory, as file:///srv/cicd/blobs"),
        ("file:///srv/blobs?x=1", "a file URL takes no options"),
        ("s3://", "the s3 URL names no bucket"),
        ("s3:///prefix", "the s3 URL names no bucket"),
        ("s3://key:secret@/prefix", "the s3 URL names no bucket"),
        ("s3://My_Bucket/x", "'My_Bucket' is not a bucket name (3 to 63 lowercase letters"),
        ("s3://ab", "'ab' is not a bucket name"),
        ("s3://127.0.0.1:9000/b", "'127.0.0.1:9000' is not a bucket name (3 to 63 lowercase"),
        ("s3://b-1/a//b", "the prefix 'a//b' has an empty, '.' or '..' part"),
        ("s3://b-1/a/../b", "the prefix 'a/../b' has an empty, '.' or '..' part"),
        ("s3://b-1#frag", "an s3 URL has no #fragment"),
        ("s3://key@b-1", "credentials in an s3 URL are KEY:SECRET@ (percent-encoded), both given"),
        ("s3://key:@b-1", "credentials in an s3 URL are KEY:SECRET@"),
        ("s3://b-1?endpoint=http://x", "unknown option 'endpoint'; the options are endpoint_url"),
        ("s3://b-1?region=a&region=b", "option 'region' is given twice"),
        ("s3://b-1?region=", "option 'region' has no value"),
        ("s3://b-1?region", "the options after ? are not name=value pairs joined by &"),
        ("s3://b-1?region=EU West", "region='EU West' is not a region name such as us-east-1"),
        ("s3://b-1?addressing_style=host", "addressing_style='host' is not one of path, virtual"),
        ("s3://b-1?endpoint_url=127.0.0.1:9000", "endpoint_url='127.0.0.1:9000' is not an http"),
        ("s3://b-1?endpoint_url=http://h:port", "endpoint_url='http://h:port' has a port that"),
        ("s3://b-1?endpoint_url=http://h/s3", "endpoint_url='http://h/s3' must be only scheme:"),
        ("s3://b-1?endpoint_url=http://u:p@h", "must be only scheme://host[:port], without a"),
    ],
)
def test_each_mistake_is_named(url, message):
    with pytest.raises(ImproperlyConfigured) as raised:
        blob_storage_settings(url, BLOB_DIR)
    assert str(raised.value).startswith("CICD_STORAGE_URL")
    assert message in str(raised.value)


def test_a_secret_is_never_repeated_in_a_message():
    with pytest.raises(ImproperlyConfigured) as raised:
        blob_storage_settings("s3://AKIA1:hunter2@b-1?colour=blue", BLOB_DIR)
    assert "hunter2" not in str(raised.value)


# ------------------------------------------------------------------------ through the settings

PRINT_BLOBS = (
    "import json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'cicd.settings';"
    "from django.conf import settings;"
    "print(json.dumps(settings.STORAGES['blobs']))"
)


def load_blob_settings(tmp_path: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CICD_STORAGE_URL"}
    env["CICD_DATA_DIR"] = str(tmp_path / "data")
    if url is not None:
        env["CICD_STORAGE_URL"] = url
    return subprocess.run(
        [sys.executable, "-c", PRINT_BLOBS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_settings_build_the_blob_storage_from_the_variable(tmp_path):
    default = load_blob_settings(tmp_path, None)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["OPTIONS"] == {"location": str(tmp_path / "data" / "blobs")}

    s3 = load_blob_settings(tmp_path, "s3://cicd-blobs/ci?endpoint_url=http://127.0.0.1:9000")
    assert s3.returncode == 0, s3.stderr
    entry = json.loads(s3.stdout)
    assert entry["BACKEND"] == "storages.backends.s3.S3Storage"
    assert (entry["OPTIONS"]["bucket_name"], entry["OPTIONS"]["location"]) == ("cicd-blobs", "ci")

    wrong = load_blob_settings(tmp_path, "s3://cicd-blobs?colour=blue")
    assert wrong.returncode != 0
    assert "CICD_STORAGE_URL: unknown option 'colour'" in wrong.stderr
