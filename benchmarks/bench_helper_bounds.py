"""What one small request can make `kzprobe helper` do: bytes fetched and log written.

    .venv/bin/python benchmarks/bench_helper_bounds.py [--malformed 2000] [--root DIR]

1. Bytes: a local raw HTTP server serves a 4 MiB page (``/big``) and an 11-hop redirect
   chain whose every hop carries a 4 MiB body (``/chain/0``); it counts the body bytes it
   managed to send (16 KiB send buffer, so kernel buffering adds little). One THRequest for
   each, to an in-process helper with the default [helper] limits.
2. Log: a ``kzprobe helper`` subprocess gets N malformed HTTP requests (a header line with
   no colon); its stderr size and line count are printed.

``--root DIR`` runs the kzprobe package found in DIR (e.g. an older ``git archive``) for
both parts. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

BODY = 4 * 1024 * 1024


class CountingSite:
    """Raw HTTP server counting body bytes sent; ``/chain/N`` redirects to ``/chain/N+1``."""

    def __init__(self) -> None:
        self.sent = self.hits = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        try:
            path = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1].decode()
            self.hits += 1
            status, extra = "200 OK", ""
            if path.startswith("/chain/"):
                status = "302 Found"
                extra = f"Location: /chain/{int(path.rsplit('/', 1)[1]) + 1}\r\n"
            writer.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: {BODY}\r\n"
                         "Content-Type: text/html\r\nConnection: close\r\n\r\n".encode())
            chunk = b"<title>big</title>" + b"x" * (16384 - 18)
            left = BODY
            while left > 0:
                writer.write(chunk[:left])
                await writer.drain()
                self.sent += min(left, len(chunk))
                left -= len(chunk)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def fetched_bytes() -> None:
    import aiohttp

    from kzprobe.config import parse_config
    from kzprobe.helper import start_helper

    for path in ("/big", "/chain/0"):
        site = CountingSite()
        port = await site.start()
        helper = {"listen": "127.0.0.1:0", "allow_nets": ["127.0.0.0/8"],
                  "allowed_ports": [port]}
        config = parse_config({"helper": helper}).config  # unknown keys: warnings only
        runner, url = await start_helper(config)
        payload = {"http_request": f"http://127.0.0.1:{port}{path}"}
        started = time.monotonic()
        async with aiohttp.ClientSession() as session, session.post(url, json=payload) as resp:
            await resp.read()
        took = time.monotonic() - started
        await asyncio.sleep(0.5)
        print(f"{path}: target sent {site.sent:,} B over {site.hits} hop(s); "
              f"helper answered {resp.status} in {took:.2f} s")
        await runner.cleanup()
        assert site.server is not None
        site.server.close()


async def malformed_log(count: int, root: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as cfg:
        cfg.write(f'[helper]\nlisten = "127.0.0.1:{port}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kzprobe", "helper", "--config", cfg.name,
        stderr=asyncio.subprocess.PIPE, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)))
    chunks: list[bytes] = []

    async def drain() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            chunks.append(chunk)

    drainer = asyncio.ensure_future(drain())
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.1)

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
        except (OSError, TimeoutError):
            pass

    for _ in range(count // 50):
        await asyncio.gather(*(one() for _ in range(50)))
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    await drainer
    os.unlink(cfg.name)
    err = b"".join(chunks)
    print(f"{count} malformed requests: helper stderr {len(err):,} B, "
          f"{len(err.splitlines())} lines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--malformed", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    asyncio.run(fetched_bytes())
    asyncio.run(malformed_log(args.malformed, args.root))


if __name__ == "__main__":
    main()
