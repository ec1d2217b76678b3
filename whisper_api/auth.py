"""The API key check every blueprint uses: `api-key` or `Authorization: Bearer`, compared in
constant time against [auth] api_keys."""

from __future__ import annotations

import hmac
import ipaddress

from flask import request

from .app_state import settings
from .errors import ApiError, unauthorized


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


def is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def refuse_remote_clients_without_keys() -> None:
    """Before every request: with no [auth] api_keys, only this PC may call the server (a
    `waitress-serve` on 0.0.0.0, or host = 0.0.0.0, must not open it to the whole network)."""
    if not settings().auth.api_keys and not is_loopback(request.remote_addr):
        raise ApiError(
            401, "401",
            "This server has no API keys configured ([auth] api_keys), so it only serves clients on its own "
            "PC. Set api_keys in its INI file and send one in the api-key header to call it from the network.",
        )
