"""An IMDSv2 stub for the container tests: ``python imds_stub.py PORT MAC`` serves a token on
PUT /latest/api/token and the MAC on GET /latest/meta-data/mac (token required)."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    mac = ""

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        self.send_response(200 if self.path == "/latest/api/token" else 404)
        self.end_headers()
        self.wfile.write(b"token")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != "token":
            self.send_response(401)
            self.end_headers()
            return
        found = self.path == "/latest/meta-data/mac"
        self.send_response(200 if found else 404)
        self.end_headers()
        if found:
            self.wfile.write(self.mac.encode())


if __name__ == "__main__":
    Handler.mac = sys.argv[2]
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
