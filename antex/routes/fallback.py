"""Every request no route takes: a 404, or a 405 when the path exists with other methods.

aiohttp answers those itself through a system route whose Expect handling cannot be changed, so a
catch-all route added last takes them instead, with the same `expect` handler as every other
route, and raises the error the middleware renders in the route's shape.
"""
from __future__ import annotations

from aiohttp import web

from antex.errors import AntexError
from antex.routes import expect


def setup(app: web.Application) -> None:
    """Add the catch-all route: after every other route, as routes with the same prefix are tried
    in the order they were added."""
    app.router.add_route("*", "/{path:.*}", no_route, expect_handler=expect)


async def no_route(request: web.Request) -> web.Response:
    itself = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not itself:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise AntexError("method_not_allowed", f"{request.method} is not allowed on {request.path}.",
                         headers={"Allow": ", ".join(sorted(allowed))})
    raise AntexError("not_found_error", f"No route {request.method} {request.path}. See the API reference in the README.")
