"""Where the sidecars of a tracing test send their spans: an HTTP endpoint that takes Zipkin's v2 JSON
(`POST /api/v2/spans`, what daprd's `zipkin` exporter sends) and keeps every span for the test to read."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SpanCollector:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                collector.spans.extend(json.loads(body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # the test reads the spans, not a log of each post
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/api/v2/spans"

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span.get("traceId") == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
