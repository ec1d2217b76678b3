"""The API key check every blueprint uses: `api-key` or `Authorization: Bearer`, compared in
constant time against [auth] api_keys."""

from __future__ import annotations

import hmac

from flask import request

from .app_state import settings
from .errors import unauthorized


def presented_key() -> str:
    key = request.headers.get("api-key", "")
    authorization = request.headers.get("Authorization", "")
    if not key and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    return key


def authenticate() -> None:
    """Raises 401 in Azure's envelope unless the request carries a key this server accepts (any
    key when [auth] api_keys is empty: clients always send one)."""
    key = presented_key()
    if not key:
        raise unauthorized()
    allowed = settings().auth.api_keys
    if not allowed:
        return
    presented = key.encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(presented, candidate.encode("utf-8")) for candidate in allowed]
    if not any(matches):
        raise unauthorized()
