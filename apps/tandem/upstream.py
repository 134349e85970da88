"""The client of the hot paths that call their own sidecar's invoke API, the gateway's forwarding and the pipelines'
model calls: pooled keep-alive HTTP/1.1 connections, with httptools (the parser uvicorn serves with) reading the
answers.

Why not aiohttp, which both used before: it was half of the gateway's own CPU per forwarded request, 300 of 718 µs
for a bare forwarder at concurrency 1 and 170 of 334 µs at 32 (bench/gateway.py's stack; this client: 424 and
166 µs). They send requests to one host that always frames its answers (Content-Length or chunked), so a client
needs little more than to write the request and feed the answer to a parser."""

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools


class UpstreamError(ConnectionError):
    """The sidecar could not be reached, hung up before it answered, or answered something that is not HTTP;
    `answer_begun` when some of its answer had come."""

    answer_begun = False


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class _Reading:
    """One answer being read: the parser's callbacks fill it, the last one resolves `done`."""

    done: asyncio.Future[None]
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    received: bool = False


class _Connection(asyncio.Protocol):
    """One connection to the sidecar, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reading: _Reading | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(UpstreamError(f"the sidecar closed the connection{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        if self.reading is not None:
            self.reading.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"the sidecar's answer is not HTTP/1.1: {error}"))
            self.close()

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.reading is not None:
            self.reading.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if self.reading is not None:
            self.reading.chunks.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.close()
        if self.reading is not None and not self.reading.done.done():
            self.reading.done.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.reading is not None and not self.reading.done.done():
            error.answer_begun = self.reading.received
            self.reading.done.set_exception(error)

    async def exchange(self, request: bytes) -> Answer:
        assert self.transport is not None
        reading = self.reading = _Reading(asyncio.get_running_loop().create_future())
        self.transport.write(request)
        try:
            await reading.done
        finally:
            self.reading = None
        return Answer(self.parser.get_status_code(), reading.headers, b"".join(reading.chunks))

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class Upstream:
    """Requests to one HTTP server (the sidecar at `url`) over at most `max_connections` pooled connections, each
    with `headers` (the Dapr API token)."""

    def __init__(self, url: str, headers: dict[str, str], max_connections: int = 100):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.base_path = parts.path.rstrip("/")
        self.fixed = f"Host: {parts.netloc}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(max_connections)

    @classmethod
    def invoke_api(cls, sidecar_url: str, api_token: str, max_connections: int = 100) -> "Upstream":
        """Calls to a sidecar's service invocation API (paths from `/<app id>/method/`), with its API token if set."""
        headers = {"dapr-api-token": api_token} if api_token else {}
        return cls(f"{sidecar_url.rstrip('/')}/v1.0/invoke", headers, max_connections)

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes, timeout: float) -> Answer:
        """The server's answer; TimeoutError after `timeout` seconds, UpstreamError when it cannot be had."""
        head = f"{method} {self.base_path}{path} HTTP/1.1\r\n{self.fixed}Content-Length: {len(body)}\r\n"
        request = (head + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n").encode(
            "latin-1"
        ) + body
        async with asyncio.timeout(timeout), self.slots:  # the wait for a free connection counts too
            while self.idle:
                connection = self.idle.pop()
                if not connection.open:
                    continue
                try:
                    return await self._exchange(connection, request)
                except UpstreamError as error:
                    # A pooled connection the server closed while it was idle: the request never reached it, so
                    # it goes again on the next pooled connection or a new one. Once a byte of an answer came,
                    # the failure is the server's.
                    if error.answer_begun:
                        raise
            return await self._exchange(await self._connect(), request)

    async def _connect(self) -> _Connection:
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, self.host, self.port, ssl=self.ssl
            )
        except OSError as error:
            raise UpstreamError(f"could not connect to {self.host}:{self.port}: {error}") from None
        return connection

    async def _exchange(self, connection: _Connection, request: bytes) -> Answer:
        try:
            answer = await connection.exchange(request)
        except BaseException:  # a failure, a timeout or a cancelled request: the connection is mid-answer
            connection.close()
            raise
        if connection.open:
            self.idle.append(connection)
        return answer

    async def aclose(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
