"""The people-facing dashboard: `GET /` and its static files.

The page is self-contained (no CDN, no build step): the browser loads index.html, the stylesheet
and the script modules from here, then calls `/v1/usage`, `/v1/usage/activity` and `/v1/models` on
the same origin with the person's key. Nothing on this route reads a key.

The files are read once, at setup, from the package (so it works from an installed wheel) and
served from memory. Only the names in `STATIC_FILES` are served: there is no path to traverse.

Cache busting: every static file is also served under `/static/<release>/<name>`, where `<release>`
is a hash of all of them together, and index.html links to those URLs. The modules import each
other by relative URL (`import { el } from "./dom.js"`), so the browser asks for every module under
the same release path: a change to any file gives every URL a new path, with no rewriting of the
scripts themselves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from antex.routes import expect

INDEX_FILE = "index.html"
JAVASCRIPT = "text/javascript; charset=utf-8"
# app.js is the entry point; the others are the modules it imports, one concern each.
STATIC_FILES = {
    "dashboard.css": "text/css; charset=utf-8",
    "app.js": JAVASCRIPT,
    "activity.js": JAVASCRIPT,
    "api.js": JAVASCRIPT,
    "bars.js": JAVASCRIPT,
    "chart.js": JAVASCRIPT,
    "clock.js": JAVASCRIPT,
    "connect.js": JAVASCRIPT,
    "dom.js": JAVASCRIPT,
    "format.js": JAVASCRIPT,
    "key.js": JAVASCRIPT,
    "snippets.js": JAVASCRIPT,
    "windows.js": JAVASCRIPT,
}

# Every dashboard response, the 404s included, carries these. The page has no inline script or
# style, talks only to its own origin, and may not be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# Under `/static/<release>/` a file never changes (a new release is a new path), so a browser may
# keep it for a year. The page itself, and `/static/<name>` without a release, are revalidated.
CACHE_PAGE = "no-cache"
CACHE_RELEASED_ASSET = "public, max-age=31536000, immutable"
CACHE_ASSET = "no-cache"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str  # quoted, as sent in the ETag header


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body=body, content_type=content_type, etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@dataclass(frozen=True)
class Dashboard:
    page: Asset
    files: dict[str, Asset]  # by name, as in STATIC_FILES
    release: str  # short hash of every file: the `<release>` in `/static/<release>/<name>`


def load_dashboard() -> Dashboard:
    """Read the page and its static files from the package, once.

    index.html refers to `/static/<name>`; those references become `/static/<release>/<name>`.
    """
    folder = resources.files("antex").joinpath("static")
    files = {name: _asset(folder.joinpath(name).read_bytes(), ctype) for name, ctype in STATIC_FILES.items()}
    template = folder.joinpath(INDEX_FILE).read_text(encoding="utf-8")
    combined = hashlib.sha256(template.encode("utf-8"))
    for name in sorted(files):
        combined.update(f"\0{name}\0".encode() + files[name].body)
    release = combined.hexdigest()[:12]
    page = template
    for name in files:
        page = page.replace(f'"/static/{name}"', f'"/static/{release}/{name}"')
    return Dashboard(page=_asset(page.encode("utf-8"), "text/html; charset=utf-8"), files=files, release=release)


def _respond(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def _not_found() -> web.Response:
    return web.Response(
        status=404,
        text="Not found\n",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


def setup(app: web.Application) -> None:
    """Add `GET /`, `GET /static/{name}` and `GET /static/{release}/{name}` (HEAD too) to the app."""
    dashboard = load_dashboard()

    async def index(request: web.Request) -> web.Response:
        return _respond(request, dashboard.page, CACHE_PAGE)

    async def static(request: web.Request) -> web.Response:
        asset = dashboard.files.get(request.match_info["name"])
        if asset is None:
            return _not_found()
        return _respond(request, asset, CACHE_ASSET)

    async def released_static(request: web.Request) -> web.Response:
        # Another release's path is a 404, not this release's file: a year-long cache entry under
        # that path would otherwise hold content it never had.
        asset = dashboard.files.get(request.match_info["name"])
        if asset is None or request.match_info["release"] != dashboard.release:
            return _not_found()
        return _respond(request, asset, CACHE_RELEASED_ASSET)

    app.router.add_get("/", index, name="dashboard", expect_handler=expect)
    app.router.add_get("/static/{name}", static, name="dashboard_static", expect_handler=expect)
    app.router.add_get("/static/{release}/{name}", released_static, name="dashboard_released_static", expect_handler=expect)
