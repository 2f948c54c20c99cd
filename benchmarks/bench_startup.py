"""Start-up cost: seconds from launching ``kzprobe run --once`` to the first request at a
loopback site, median of ``--runs`` (issue 22's target: <= 1.0 s).

Run it as an installed package runs (bytecode compiled once; this machine's environment sets
PYTHONDONTWRITEBYTECODE, which would add compiling ~100 modules to every start)::

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python benchmarks/bench_startup.py --runs 7
"""

from __future__ import annotations

import argparse
import http.server
import socketserver
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

FIRST: list[float] = []


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        FIRST.append(time.time())
        body = b"<html><title>start-up</title>ok</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _config(directory: Path, port: int) -> Path:
    path = directory / "c.toml"
    path.write_text(f'[targets]\nurls = ["http://127.0.0.1:{port}/"]\n'
                    '[analysis]\nnot_bogon = ["127.0.0.0/8"]\nretries = 0\n'
                    f'[output]\ndir = "{directory / "out"}"\n'
                    '[service]\nmetrics_listen = ""\n[probe]\npublic_ip = ["192.0.2.1"]\n',
                    encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kzprobe", default=".venv/bin/kzprobe")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(server.server_address[1])
    seconds = []
    for _ in range(args.runs):
        config = _config(Path(tempfile.mkdtemp(prefix="kzprobe-startup-")), port)
        FIRST.clear()
        started = time.time()
        subprocess.run([args.kzprobe, "run", "--once", "--config", str(config)],
                       capture_output=True, check=True, timeout=120)
        seconds.append(FIRST[0] - started)
    server.shutdown()
    print(f"start -> first request: median {statistics.median(seconds):.2f} s "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}, {args.runs} runs); target <= 1.0 s")


if __name__ == "__main__":
    main()
