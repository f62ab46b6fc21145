"""The people-facing dashboard: `GET /` and its three static files.

The page is self-contained (no CDN, no build step): the browser loads index.html, the stylesheet
and the script from here, then calls `/v1/usage` and `/v1/usage/activity` on the same origin with
the person's key. Nothing on this route reads a key.

The files are read once, at setup, from the package (so it works from an installed wheel) and
served from memory. Only the names in `STATIC_FILES` are served: there is no path to traverse.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

INDEX_FILE = "index.html"
STATIC_FILES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
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

# index.html names each asset with `?v=<hash>`, so a browser may keep an asset for a long time:
# a new release changes the hash and therefore the URL. The page itself is always revalidated.
CACHE_PAGE = "no-cache"
CACHE_VERSIONED_ASSET = "public, max-age=31536000, immutable"
CACHE_ASSET = "no-cache"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str  # quoted, as sent in the ETag header
    version: str  # short content hash, the `?v=` in index.html


def _asset(body: bytes, content_type: str) -> Asset:
    digest = hashlib.sha256(body).hexdigest()
    return Asset(body=body, content_type=content_type, etag=f'"{digest[:32]}"', version=digest[:12])


def load_assets() -> dict[str, Asset]:
    """Read the page and its static files from the package, once.

    index.html refers to `/static/<name>`; those references get `?v=<content hash>` here.
    """
    folder = resources.files("antex").joinpath("static")
    assets = {name: _asset(folder.joinpath(name).read_bytes(), ctype) for name, ctype in STATIC_FILES.items()}
    page = folder.joinpath(INDEX_FILE).read_text(encoding="utf-8")
    for name, asset in assets.items():
        page = page.replace(f'"/static/{name}"', f'"/static/{name}?v={asset.version}"')
    assets[INDEX_FILE] = _asset(page.encode("utf-8"), "text/html; charset=utf-8")
    return assets


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
    """Add `GET /` and `GET /static/{name}` (HEAD too) to the app."""
    assets = load_assets()
    page = assets[INDEX_FILE]

    async def index(request: web.Request) -> web.Response:
        return _respond(request, page, CACHE_PAGE)

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            return _not_found()
        asset = assets[name]
        versioned = request.query.get("v") == asset.version
        return _respond(request, asset, CACHE_VERSIONED_ASSET if versioned else CACHE_ASSET)

    app.router.add_get("/", index, name="dashboard")
    app.router.add_get("/static/{name}", static, name="dashboard_static")
