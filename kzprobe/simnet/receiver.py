"""A webhook receiver: keeps what kzprobe's alerts POST, so the demo can show it.

Every POST is kept (path, content type, idempotency key and body; bounded in count and
size) and answered 204, which tells the sender it was delivered. :meth:`Receiver.wait_for`
waits, bounded, until a path has had a number of POSTs: the demo learns from the
daemon's heartbeat (POSTed after every finished sweep, once the sweep's events are
written) that a sweep is over, without reaching into the daemon.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from kzprobe.simnet.common import HostPort, OneAddress, Service, bind_tcp, sock_address

MAX_POSTS = 1000
MAX_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Post:
    """One request as it arrived."""

    path: str
    content_type: str
    key: str | None  # the Idempotency-Key header
    body: bytes


class Receiver(OneAddress, Service):
    """An HTTP server on ``host`` that keeps every POST and answers 204."""

    def __init__(self, host: str, port: int = 0, *, max_posts: int = MAX_POSTS) -> None:
        self.listen: HostPort = (host, port)
        self.max_posts = max_posts
        self.posts: list[Post] = []
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        sock = bind_tcp(*self.listen)
        self._address = sock_address(sock)
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def addresses(self) -> dict[str, str]:
        host, port = self.address
        return {"http": f"{host}:{port}"}

    def url(self, path: str) -> str:
        host, port = self.address
        return f"http://{host}:{port}{path}"

    def received(self, path: str) -> list[Post]:
        return [post for post in self.posts if post.path == path]

    async def wait_for(self, path: str, count: int, timeout: float) -> list[Post]:
        """The POSTs to ``path`` once there are ``count``; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while len(self.received(path)) < count:
                await self._arrived.wait()
        return self.received(path)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if len(self.posts) < self.max_posts:
            self.posts.append(Post(request.path, request.content_type,
                                   request.headers.get("Idempotency-Key"), body))
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()
        return web.Response(status=204)
