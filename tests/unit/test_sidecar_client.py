"""The sidecar client's requests and error mapping, against a fake sidecar (httpx.MockTransport), and through its own
transport against a socket: a sidecar that is silent, hangs up or is not there is an httpx.TransportError."""

import asyncio
import json

import httpx
import pytest

from tandem.ports import free_port
from tandem.sidecar import KEEP, ETagMismatch, Sidecar, SidecarError


def sidecar_answering(handler) -> tuple[Sidecar, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return Sidecar("http://sidecar", api_token="tok", transport=httpx.MockTransport(record)), seen


def test_every_call_carries_the_api_token_and_state_writes_carry_the_etag():
    sidecar, seen = sidecar_answering(lambda request: httpx.Response(204))
    asyncio.run(sidecar.save_state("store", "k", {"v": 1}, etag="7"))
    request = seen[0]
    assert request.headers["dapr-api-token"] == "tok"
    assert request.url.path == "/v1.0/state/store"
    assert json.loads(request.content) == [
        {"key": "k", "value": {"v": 1}, "etag": "7", "options": {"concurrency": "first-write"}}
    ]


def test_a_conflict_is_an_etag_mismatch_and_other_errors_keep_their_status():
    sidecar, _ = sidecar_answering(lambda request: httpx.Response(409, text="etag mismatch"))
    with pytest.raises(ETagMismatch):
        asyncio.run(sidecar.delete_state("store", "k", etag="1"))
    sidecar, _ = sidecar_answering(lambda request: httpx.Response(500, text="boom"))
    with pytest.raises(SidecarError) as failed:
        asyncio.run(sidecar.publish("pubsub", "topic", {"a": 1}))
    assert failed.value.status == 500


def test_publish_metadata_becomes_query_parameters():
    sidecar, seen = sidecar_answering(lambda request: httpx.Response(204))
    asyncio.run(sidecar.publish("pubsub", "readings", [1], metadata={"ttlInSeconds": "60"}))
    assert seen[0].url.path == "/v1.0/publish/pubsub/readings"
    assert seen[0].url.params["metadata.ttlInSeconds"] == "60"


def test_missing_state_is_none_with_no_etag():
    sidecar, _ = sidecar_answering(lambda request: httpx.Response(204))
    assert asyncio.run(sidecar.get_state("store", "absent")) == (None, None)


def test_invoke_goes_through_the_sidecar_to_the_named_app():
    sidecar, seen = sidecar_answering(lambda request: httpx.Response(200, json={"ok": True}))
    response = asyncio.run(sidecar.invoke("nlp", "/embed", json_body={"texts": ["hi"]}, headers={"traceparent": "t"}))
    assert response.json() == {"ok": True}
    assert seen[0].url.path == "/v1.0/invoke/nlp/method/embed"
    assert seen[0].headers["traceparent"] == "t"
    assert json.loads(seen[0].content) == {"texts": ["hi"]}


def test_bulk_publish_sends_one_entry_per_event_and_reports_failed_entries():
    sidecar, seen = sidecar_answering(lambda request: httpx.Response(204))
    asyncio.run(sidecar.publish_bulk("pubsub", "readings", [{"a": 1}, {"a": 2}]))
    assert seen[0].url.path == "/v1.0-alpha1/publish/bulk/pubsub/readings"
    assert json.loads(seen[0].content) == [
        {"entryId": "0", "event": {"a": 1}, "contentType": "application/json"},
        {"entryId": "1", "event": {"a": 2}, "contentType": "application/json"},
    ]
    failed = {"failedEntries": [{"entryId": "1", "error": "broker down"}], "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"}
    sidecar, _ = sidecar_answering(lambda request: httpx.Response(500, json=failed))
    with pytest.raises(SidecarError) as error:
        asyncio.run(sidecar.publish_bulk("pubsub", "readings", [{"a": 1}, {"a": 2}]))
    assert error.value.status == 500
    assert json.loads(error.value.body)["failedEntries"][0]["entryId"] == "1"


def test_update_state_reads_again_when_another_writer_saved_first():
    versions = iter([("1", 409), ("2", 204)])  # the first save loses to another writer, the second lands
    saved = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            etag, _ = current[0]
            return httpx.Response(200, json={"n": int(etag)}, headers={"etag": etag})
        saved.append(json.loads(request.content)[0])
        status = current[0][1]
        current[0] = next(versions, current[0])
        return httpx.Response(status)

    current = [next(versions)]
    sidecar, _ = sidecar_answering(handler)
    calls = []

    async def add_one(value):
        calls.append(value)
        return {"n": value["n"] + 1}, value["n"] + 1

    assert asyncio.run(sidecar.update_state("store", "k", add_one)) == 3
    assert calls == [{"n": 1}, {"n": 2}]
    assert [item["etag"] for item in saved] == ["1", "2"]


def test_update_state_keeps_the_key_retries_a_lost_create_and_gives_up_after_its_attempts():
    sidecar, seen = sidecar_answering(lambda request: httpx.Response(200, json=1, headers={"etag": "1"}))

    async def keep(value):
        return KEEP, "kept"

    assert asyncio.run(sidecar.update_state("store", "k", keep)) == "kept"
    assert [request.method for request in seen] == ["GET"]

    # Two writers create the key at once: the loser gets 500, then finds the key and starts again from it.
    answers = iter(
        [
            httpx.Response(204),  # read: no key yet
            httpx.Response(500, text="failed to set key"),  # create: the other writer created it first
            httpx.Response(200, json=5, headers={"etag": "3"}),  # the key exists now
            httpx.Response(200, json=5, headers={"etag": "3"}),  # read again
            httpx.Response(204),  # saved over etag 3
        ]
    )
    sidecar, seen = sidecar_answering(lambda request: next(answers))

    async def create(value):
        return (value or 0) + 1, value

    assert asyncio.run(sidecar.update_state("store", "k", create)) == 5
    assert [request.method for request in seen] == ["GET", "POST", "GET", "GET", "POST"]
    assert json.loads(seen[-1].content)[0]["etag"] == "3"

    sidecar, _ = sidecar_answering(
        lambda request: (
            httpx.Response(409) if request.method == "POST" else httpx.Response(200, json=1, headers={"etag": "1"})
        )
    )
    with pytest.raises(ETagMismatch):
        asyncio.run(sidecar.update_state("store", "k", create, attempts=3))


def on_a_real_socket(serve, call):
    """Runs `call(sidecar)` against `serve(reader, writer)` listening on a loopback port, through the client's own
    transport (aiohttp's), not a fake one."""

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, Sidecar(f"http://127.0.0.1:{port}", api_token="tok", timeout=0.3) as sidecar:
            return await call(sidecar)

    return asyncio.run(main())


def test_its_own_transport_sends_the_token_and_reads_the_answer():
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):  # requests on one kept-alive connection
            lengths = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if b"content-length" in line]
            seen.append(head + await reader.readexactly(lengths[0] if lengths else 0))
            answer = b'{"v": 1}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: 3\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()

    async def call(sidecar: Sidecar):
        await sidecar.publish("pubsub", "topic", {"a": 1})
        return await sidecar.get_state("store", "k")

    value = on_a_real_socket(serve, call)
    assert value == ({"v": 1}, "3")
    assert b"dapr-api-token: tok" in seen[0].lower() and seen[0].endswith(b'{"a":1}')
    assert seen[1].startswith(b"GET /v1.0/state/store/k ")


def test_a_sidecar_that_does_not_answer_in_time_or_hangs_up_is_a_transport_error():
    # What every caller catches as "the sidecar is unreachable" (httpx.TransportError), from aiohttp's transport too.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    for serve in (silent, hangs_up):
        with pytest.raises(httpx.TransportError):
            on_a_real_socket(serve, lambda sidecar: sidecar.publish("pubsub", "topic", {"a": 1}))


def test_no_sidecar_listening_is_a_transport_error():
    async def call():
        async with Sidecar(f"http://127.0.0.1:{free_port()}") as sidecar:
            await sidecar.publish("pubsub", "topic", {})

    with pytest.raises(httpx.TransportError):
        asyncio.run(call())
