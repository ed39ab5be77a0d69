"""The JSON API under /api/v1/ (token or session authentication) and its tokens.

The endpoints are in `runs.api.views`, routed by `runs.api_urls` and described by
`runs.openapi` (served as /api/v1/openapi.json).
"""

from __future__ import annotations

from runs.api.auth import SCOPES, TOKEN_PREFIX, authenticate, create_token, revoke_token
from runs.api.serialise import run_dict
from runs.api.views import dispatches

run_summary = run_dict

__all__ = [
    "SCOPES",
    "TOKEN_PREFIX",
    "authenticate",
    "create_token",
    "dispatches",
    "revoke_token",
    "run_summary",
]
