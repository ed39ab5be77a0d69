"""The `post-receive` hook for bare repositories on the server's host.

The hook is a small Python script (standard library only, run by the server's own interpreter)
that sends the pushed ref updates to /hooks/git/<organisation>/<repository>, signed with a webhook
secret of the repository like GitHub signs its deliveries. It retries with the same delivery id,
so a retry after a lost answer starts nothing twice.
"""

from __future__ import annotations

import sys

MARKER = "cicd-post-receive-hook"

_SCRIPT = """#!{python}
# {marker}: tells the cicd server at {url} about every push to this repository.
# Written by `cicd manage install_hook {full_name}`; installing again replaces it (and its secret).
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

URL = {url!r}
SECRET = {secret!r}
BATCH = 1000  # ref updates per delivery, the server's limit


def deliver(body, delivery):
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {{
        "Content-Type": "application/json",
        "X-Cicd-Event": "push",
        "X-Cicd-Delivery": delivery,
        "X-Cicd-Signature-256": signature,
    }}
    for attempt in range(6):
        request = urllib.request.Request(URL, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                print("cicd: push received (delivery %s, HTTP %s)" % (delivery, response.status))
                return True
        except urllib.error.HTTPError as error:
            if error.code != 429 and error.code < 500:
                detail = error.read(500).decode("utf-8", "replace")
                print("cicd: the server refused the push: HTTP %s %s" % (error.code, detail),
                      file=sys.stderr)
                return False
            wait = error.headers.get("Retry-After") or str(2 ** attempt)
            time.sleep(min(float(wait) if wait.isdigit() else 2 ** attempt, 30))
        except (urllib.error.URLError, OSError) as error:
            print("cicd: %s unreachable (%s), retrying" % (URL, error), file=sys.stderr)
            time.sleep(min(2 ** attempt, 30))
    print("cicd: gave up: the push is stored, but no workflow was started", file=sys.stderr)
    return False


def main():
    updates = []
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 3:
            updates.append({{"before": parts[0], "after": parts[1], "ref": parts[2]}})
    pusher = os.environ.get("GL_USERNAME") or os.environ.get("USER") or os.environ.get("LOGNAME")
    push_id = str(uuid.uuid4())
    for start in range(0, len(updates), BATCH):
        body = json.dumps({{"pusher": pusher or "", "updates": updates[start:start + BATCH]}})
        deliver(body.encode(), "%s-%d" % (push_id, start // BATCH))
    return 0  # a post-receive hook cannot undo the push: never fail it


if __name__ == "__main__":
    sys.exit(main())
"""


def hook_script(*, url: str, secret: str, full_name: str, python: str | None = None) -> str:
    """The hook's text for the endpoint `url`, signing with `secret`."""
    return _SCRIPT.format(
        python=python or sys.executable, marker=MARKER, url=url, secret=secret, full_name=full_name
    )
