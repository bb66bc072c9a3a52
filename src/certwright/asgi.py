"""Plain ASGI helpers every HTTP front-end uses: below the front-ends and the server, so
that no front-end imports ``server/``."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class AsgiEndpoint:
    """A front-end's plain ASGI callable as a Starlette route's endpoint: Starlette
    treats a bound method as a request-response function, an object with ``__call__``
    as an ASGI application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def read_body(receive: Receive) -> bytes:
    """The request body of a plain ASGI request (the server's body limit has capped its
    size before the front-end sees it)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
