"""CICD_STORAGE_URL: where the content-addressed blobs (artifact and cache archives) are kept.

`blob_storage_settings(url, blob_dir)` turns the variable into the `STORAGES["blobs"]` entry that
`runs.storage` uses through Django's storage API. It is a pure function, called once by
cicd/settings.py, so that every form and every error message is unit-tested without a server.

Forms:
- empty (the default) or `file:///absolute/path`: files on the local file system, under
  CICD_BLOB_DIR or the given directory.
- `s3://[KEY:SECRET@]bucket[/prefix][?option=value&...]`: S3 or an S3-compatible server (MinIO,
  Ceph, Garage...) through django-storages. Options: `endpoint_url` (http(s)://host:port of an
  S3-compatible server; absent: AWS), `region` (e.g. us-east-1; absent: boto3's own lookup),
  `addressing_style` (path, virtual or auto; default path with an endpoint_url, which most
  S3-compatible servers need, and auto for AWS). Credentials come from boto3's usual places
  (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an instance role) unless the URL
  carries them, percent-encoded; a URL with secrets is best given as CICD_STORAGE_URL_FILE.

Why these S3 options:
- `file_overwrite=True`: a blob's name is the SHA-256 of its content, so two writers of one name
  write the same bytes and S3 replaces objects atomically. Overwriting is harmless, whereas
  django-storages' `file_overwrite=False` would cost a HEAD per save and, after a race, store a
  second copy under a random suffix only to delete it.
- `default_acl=None`: objects inherit the bucket's policy (private); blobs are served through
  the application's permission checks, never by URL.
- `max_memory_size`: django-storages' file object (S3File) downloads an object whole before the
  first read, by default into a buffer in memory; past this size the buffer becomes a temporary
  file. `runs.storage.open_blob` streams the object's body instead and never uses S3File; this
  bounds anything else that opens a blob through `storage.open`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

VARIABLE = "CICD_STORAGE_URL"
S3_BACKEND = "storages.backends.s3.S3Storage"
FILE_BACKEND = "django.core.files.storage.FileSystemStorage"
S3_OPTIONS = ("endpoint_url", "region", "addressing_style")
ADDRESSING_STYLES = ("path", "virtual", "auto")
# What S3File buffers in memory before spilling to a temporary file (see the module docstring).
MAX_MEMORY_BYTES = 8 * 1024 * 1024

# AWS's rules for new buckets: 3 to 63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit. S3-compatible servers accept these names too.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]+")
_FORMS = "use s3://bucket/prefix?endpoint_url=...&region=... or file:///absolute/path"


def blob_storage_settings(url: str, blob_dir: Path) -> dict:
    """The `STORAGES["blobs"]` entry for CICD_STORAGE_URL=`url` (see the module docstring);
    ImproperlyConfigured naming the variable and what is wrong for anything else."""
    url = (url or "").strip()
    if not url:
        return _file_storage(blob_dir)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "file":
        return _file_storage(_file_path(url))
    if scheme == "s3":
        return _s3_storage(url)
    shown = f"scheme {scheme!r}" if scheme else "no scheme"
    raise ImproperlyConfigured(f"{VARIABLE} has {shown}; {_FORMS}")


def _file_storage(location: Path) -> dict:
    return {"BACKEND": FILE_BACKEND, "OPTIONS": {"location": str(location)}}


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/"):
        raise ImproperlyConfigured(
            f"{VARIABLE}: a file URL names an absolute directory, as file:///srv/cicd/blobs "
            "(three slashes)"
        )
    if parts.query or parts.fragment:
        raise ImproperlyConfigured(f"{VARIABLE}: a file URL takes no options (nothing after ?)")
    return Path(unquote(parts.path))


def _s3_storage(url: str) -> dict:
    # Split by hand: urlsplit's hostname is lowercased (a bucket "My" must be refused, not
    # turned into "my") and its port parsing fails on "host:9000" before we can say what to do.
    rest = url.split("://", 1)[1] if "://" in url else ""
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ImproperlyConfigured(f"{VARIABLE}: an s3 URL has no #fragment")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, bucket = authority.rpartition("@")
    if not bucket:
        raise ImproperlyConfigured(f"{VARIABLE}: the s3 URL names no bucket; {_FORMS}")
    if not _BUCKET.fullmatch(bucket):
        detail = "; put the server in ?endpoint_url=" if ":" in bucket else ""
        raise ImproperlyConfigured(
            f"{VARIABLE}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, "
            f"dots and hyphens){detail}"
        )
    options: dict = {
        "bucket_name": bucket,
        "location": _prefix(path),
        "file_overwrite": True,
        "default_acl": None,
        "max_memory_size": MAX_MEMORY_BYTES,
    }
    if at:
        key, colon, secret = userinfo.partition(":")
        if not key or not colon or not secret:
            raise ImproperlyConfigured(
                f"{VARIABLE}: credentials in an s3 URL are KEY:SECRET@ (percent-encoded), both "
                "given; or leave them out and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        options["access_key"], options["secret_key"] = unquote(key), unquote(secret)
    given = _query(query)
    endpoint = given.get("endpoint_url")
    if endpoint is not None:
        options["endpoint_url"] = _endpoint(endpoint)
    region = given.get("region")
    if region is not None:
        if not _REGION.fullmatch(region):
            raise ImproperlyConfigured(
                f"{VARIABLE}: region={region!r} is not a region name such as us-east-1"
            )
        options["region_name"] = region
    style = given.get("addressing_style", "path" if endpoint is not None else None)
    if style is not None:
        if style not in ADDRESSING_STYLES:
            raise ImproperlyConfigured(
                f"{VARIABLE}: addressing_style={style!r} is not one of "
                f"{', '.join(ADDRESSING_STYLES)}"
            )
        options["addressing_style"] = style
    return {"BACKEND": S3_BACKEND, "OPTIONS": options}


def _prefix(path: str) -> str:
    """The key prefix under which blobs go: `a/b` for s3://bucket/a/b/, "" for none."""
    path = unquote(path).strip("/")
    if not path:
        return ""
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ImproperlyConfigured(
            f"{VARIABLE}: the prefix {path!r} has an empty, '.' or '..' part; give it as "
            "s3://bucket/some/prefix"
        )
    return path


def _query(query: str) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ImproperlyConfigured(
            f"{VARIABLE}: the options after ? are not name=value pairs joined by &"
        ) from None
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in S3_OPTIONS:
            raise ImproperlyConfigured(
                f"{VARIABLE}: unknown option {name!r}; the options are {', '.join(S3_OPTIONS)}"
            )
        if name in given:
            raise ImproperlyConfigured(f"{VARIABLE}: option {name!r} is given twice")
        if not value.strip():
            raise ImproperlyConfigured(f"{VARIABLE}: option {name!r} has no value")
        given[name] = value.strip()
    return given


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(
            f"{VARIABLE}: endpoint_url={value!r} is not an http:// or https:// URL of a server, "
            "as http://127.0.0.1:9000"
        )
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ImproperlyConfigured(
            f"{VARIABLE}: endpoint_url={value!r} has a port that is not a number"
        ) from None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ImproperlyConfigured(
            f"{VARIABLE}: endpoint_url={value!r} must be only scheme://host[:port], without "
            "a path, options or credentials"
        )
    return f"{parts.scheme}://{parts.netloc}"
