"""A webhook receiver for lab daemons, run in the daemon's own namespace so an outage the test
switches on in the router never cuts the alerts' way out.

``python webhook_sink.py FILE``: listens on 127.0.0.1 (a free port), prints
``READY {"port": N}``, appends each POST's body (one JSON event) as one line to FILE and
answers 200. Stops on SIGTERM.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 1 << 20
_LOCK = threading.Lock()


def handler(path: Path) -> type[BaseHTTPRequestHandler]:
    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = json.loads(self.rfile.read(length) or b"null")
            with _LOCK, path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(body) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    return Sink


def main(path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(path))
    print("READY " + json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
