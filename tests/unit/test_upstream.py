"""The client the gateway and the pipelines call their sidecars with, against servers on real sockets that answer
as told: keep-alive reuse, chunked answers, `Connection: close`, a pooled connection the server dropped, and servers
that hang up, hang, answer garbage or are not there (UpstreamError or TimeoutError, never a wrong answer)."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tandem.ports import free_port
from tandem.upstream import Upstream, UpstreamError

# A handler gets each request's head and body on a connection, and the connection's number, and answers by
# writing to the stream (or not).
Handler = Callable[[bytes, bytes, int, asyncio.StreamWriter], Awaitable[None]]


def ok(body: bytes, *headers: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A server on a free port; the list counts the connections it accepted."""
    connections: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(connections)
        connections.append(number)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                await handler(head, body, number, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    port = free_port()
    server = await asyncio.start_server(on_connection, "127.0.0.1", port)
    return server, f"http://127.0.0.1:{port}/v1.0/invoke", connections


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_requests_carry_the_token_and_share_one_kept_alive_connection():
    heads: list[bytes] = []

    async def echo(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        heads.append(head)
        writer.write(ok(body, "traceparent: t-1"))

    async def scenario() -> None:
        server, url, connections = await serve(echo)
        upstream = Upstream(url, {"dapr-api-token": "tok"})
        first = await upstream.request("POST", "/svc/method/v2/models/m/infer", {"x-request-id": "r1"}, b'{"a":1}', 5)
        second = await upstream.request("GET", "/svc/method/v2/models/m", {}, b"", 5)
        assert (first.status, first.body, first.headers["traceparent"]) == (200, b'{"a":1}', "t-1")
        assert (second.status, second.body) == (200, b"")
        assert connections == [0]
        await upstream.aclose()
        server.close()

    run(scenario)
    request_line, *header_lines = heads[0].decode().strip().split("\r\n")
    assert request_line == "POST /v1.0/invoke/svc/method/v2/models/m/infer HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert headers["dapr-api-token"] == "tok"
    assert headers["x-request-id"] == "r1"
    assert headers["Content-Length"] == "7"
    assert heads[1].startswith(b"GET /v1.0/invoke/svc/method/v2/models/m HTTP/1.1\r\n")


def test_a_chunked_answer_is_read_whole():
    async def chunked(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )

    async def scenario() -> None:
        server, url, _ = await serve(chunked)
        upstream = Upstream(url, {})
        answer = await upstream.request("POST", "/x", {}, b"{}", 5)
        assert (answer.status, answer.body) == (201, b"hello world")
        server.close()

    run(scenario)


def test_connection_close_is_honoured_and_the_next_request_opens_another():
    async def closing(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(str(number).encode(), "Connection: close"))
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url, connections = await serve(closing)
        upstream = Upstream(url, {})
        answers = [(await upstream.request("POST", "/x", {}, b"{}", 5)).body for _ in range(3)]
        assert answers == [b"0", b"1", b"2"]
        assert connections == [0, 1, 2]
        server.close()

    run(scenario)


def test_a_pooled_connection_the_server_dropped_unanswered_is_replaced_once():
    """The first connection answers once, then drops the next request without a byte of answer, as a server does
    that closes idle connections: that request goes again on a new connection (every model route is idempotent)."""

    async def drops_its_second(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        if number == 0 and b"second" in body:
            writer.close()
            return
        writer.write(ok(body))

    async def scenario() -> None:
        server, url, connections = await serve(drops_its_second)
        upstream = Upstream(url, {})
        assert (await upstream.request("POST", "/x", {}, b"first", 5)).body == b"first"
        assert (await upstream.request("POST", "/x", {}, b"second", 5)).body == b"second"
        assert connections == [0, 1]
        server.close()

    run(scenario)


def test_a_server_that_hangs_up_half_way_or_answers_garbage_is_an_upstream_error():
    async def half(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(b"0123456789")[:-4])  # the body cut short
        await writer.drain()
        writer.close()

    async def garbage(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    async def scenario() -> None:
        for handler, message in ((half, "closed the connection"), (garbage, "not HTTP/1.1")):
            server, url, connections = await serve(handler)
            upstream = Upstream(url, {})
            with pytest.raises(UpstreamError, match=message):
                await upstream.request("POST", "/x", {}, b"{}", 5)
            assert connections == [0]  # a first connection is not retried
            assert upstream.idle == []
            server.close()

    run(scenario)


def test_a_silent_server_times_out_and_its_connection_is_not_reused():
    async def silent_once(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        if number > 0:
            writer.write(ok(b"late but fine"))

    async def scenario() -> None:
        server, url, connections = await serve(silent_once)
        upstream = Upstream(url, {})
        with pytest.raises(TimeoutError):
            await upstream.request("POST", "/x", {}, b"{}", 0.2)
        assert (await upstream.request("POST", "/x", {}, b"{}", 5)).body == b"late but fine"
        assert connections == [0, 1]
        server.close()

    run(scenario)


def test_nothing_listening_is_an_upstream_error():
    async def scenario() -> None:
        upstream = Upstream(f"http://127.0.0.1:{free_port()}", {})
        with pytest.raises(UpstreamError, match="could not connect"):
            await upstream.request("POST", "/x", {}, b"{}", 5)

    run(scenario)


def test_concurrent_requests_open_at_most_max_connections_and_each_gets_its_own_answer():
    async def slow_echo(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.01)
        writer.write(ok(body))

    async def scenario() -> None:
        server, url, connections = await serve(slow_echo)
        upstream = Upstream(url, {}, max_connections=4)
        bodies = [str(i).encode() for i in range(40)]
        answers = await asyncio.gather(*(upstream.request("POST", "/x", {}, body, 5) for body in bodies))
        assert [answer.body for answer in answers] == bodies
        assert len(connections) == 4
        server.close()

    run(scenario)


def test_the_wait_for_a_free_connection_counts_against_the_timeout():
    async def silent(head: bytes, body: bytes, number: int, writer: asyncio.StreamWriter) -> None:
        pass

    async def scenario() -> None:
        server, url, _ = await serve(silent)
        upstream = Upstream(url, {}, max_connections=1)
        holding = asyncio.create_task(upstream.request("POST", "/x", {}, b"{}", 30))
        await asyncio.sleep(0.05)  # it has the one connection
        with pytest.raises(TimeoutError):
            await upstream.request("POST", "/x", {}, b"{}", 0.2)
        assert not holding.done()
        holding.cancel()
        server.close()

    run(scenario)
