"""A scripted OpenAI-compatible chat server on loopback, for the tests of every LLM client."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server:
    """Answers each POST with the next scripted action: ("ok", text), ("status", code), ("sleep", s), ("garbage",)."""

    def __init__(self):
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output free of access logs
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                action = outer.script.pop(0) if outer.script else ("ok", "yes")
                if action[0] == "status":
                    self.send_response(action[1])
                    self.end_headers()
                    return
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = ("ok", "yes")
                payload = (b"{not json" if action[0] == "garbage" else
                           json.dumps({"choices": [{"message": {"role": "assistant", "content": action[1]}}]}).encode())
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up: expected
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
