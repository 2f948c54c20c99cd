"""A webhook receiver for lab tests: run inside a namespace, it records every POST.

``python webhook_receiver.py OUT`` listens on 127.0.0.1 (an ephemeral port) of the namespace
it runs in, prints ``READY {"port": N}`` and appends one JSON line per request to ``OUT``
(``t`` = wall-clock receive time, ``path``, ``idempotency_key``, ``body``), flushed at once
so a test reading the file sees each POST as soon as it is answered. Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import IO

from aiohttp import web

MAX_BODY = 1024 * 1024


async def serve(out: IO[str]) -> None:
    async def record(request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_BODY)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        out.write(json.dumps({"t": time.time(), "path": request.path,
                              "idempotency_key": request.headers.get("Idempotency-Key"),
                              "body": body}) + "\n")
        out.flush()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY " + json.dumps({"port": port}), flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    with Path(sys.argv[1]).open("a", encoding="utf-8") as out:
        asyncio.run(serve(out))


if __name__ == "__main__":
    main()
