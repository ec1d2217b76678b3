"""The test page at `GET /`: static HTML, CSS and a script shipped in whisper_api/static.

No build step and nothing from a CDN (the PC may be offline). The page talks to the server only
through the public routes, with the key the user types in, like any other client.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory

STATIC_DIRECTORY = Path(__file__).resolve().parent / "static"
PAGE_FILES = ("page.js", "page.css")
# the page loads only its own script and style; audio plays from blob: URLs of the chosen file
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

blueprint = Blueprint("page", __name__)


def static_file(name: str) -> Response:
    response = send_from_directory(STATIC_DIRECTORY, name, max_age=0)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blueprint.get("/")
def index() -> Response:
    return static_file("index.html")


@blueprint.get("/page/<name>")
def page_file(name: str) -> Response:
    if name not in PAGE_FILES:
        abort(404)
    return static_file(name)
