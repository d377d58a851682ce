"""A scripted OpenAI-compatible chat server on loopback, for the tests of every LLM client."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


class Server:
    """Answers each POST with the next scripted action:

    ("ok", content): a chat completion (content may be any JSON value, None included);
    ("status", code[, headers]): an empty answer with that status (e.g. 429 with Retry-After);
    ("sleep", s): wait, then answer "yes"; ("garbage",): a body that is not JSON;
    ("no_choices",): a completion without choices;
    ("truncated",): a Content-Length larger than the body, then the connection closes;
    ("bad_status",): a malformed status line;
    ("trickle", content, seconds_per_byte): a completion sent one byte at a time.
    """

    def __init__(self):
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output free of access logs
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body,
                                       "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "time": time.monotonic()})
                action = outer.script.pop(0) if outer.script else ("ok", "yes")
                try:
                    self.answer(action)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up: expected
                    pass

            def answer(self, action):
                kind = action[0]
                if kind == "status":
                    self.send_response(action[1])
                    for k, v in (action[2] if len(action) > 2 else {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if kind == "bad_status":
                    self.wfile.write(b"HTTP/1.1 OK-ish\r\n\r\n")
                    self.close_connection = True
                    return
                if kind == "sleep":
                    time.sleep(action[1])
                    action = ("ok", "yes")
                payload = {"garbage": b"{not json", "no_choices": json.dumps({"choices": []}).encode()}.get(
                    action[0]) or completion(action[1] if len(action) > 1 else "yes")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if kind == "truncated":
                    self.send_header("Content-Length", str(len(payload) + 100))
                    self.end_headers()
                    self.wfile.write(payload[:len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if kind == "trickle":
                    for byte in payload:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(action[2])
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
