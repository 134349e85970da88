"""The sensors app in-process, its sidecar faked: what it publishes, and every bad batch it refuses (4xx naming why).

Bad inputs tried: unknown fields (batch, reading), unknown and missing channels, NaN and infinity (as JSON NaN and as
strings), a timestamp far in the future, a timestamp without a time zone, an empty and an oversized batch, a
duplicate reading id, a machine id with a key separator, a body that is not JSON.
"""

import json
import math
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from sensors import main
from tandem import partitions
from tandem.fleet import CHANNELS
from tandem.sidecar import Sidecar


def reading(index: int = 0, **changes):
    return {
        "machine": "machine-0",
        "id": f"machine-0:{index}",
        "timestamp": 1_700_000_000 + index,
        "values": dict.fromkeys(CHANNELS, 1.5),
        **changes,
    }


@pytest.fixture
def app(monkeypatch):
    published: list[httpx.Request] = []

    def sidecar(request: httpx.Request) -> httpx.Response:
        published.append(request)
        return httpx.Response(204)

    with TestClient(main.app) as client:
        main.app.state.sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(sidecar))
        yield client, published


def test_a_batch_is_published_as_one_event_holding_its_readings(app):
    client, published = app
    before = time.time()
    response = client.post("/readings", json={"readings": [reading(0), reading(1)]})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2}
    assert [request.url.path for request in published] == ["/v1.0/publish/pubsub/readings"]
    events = json.loads(published[0].content)["readings"]
    assert [event["id"] for event in events] == ["machine-0:0", "machine-0:1"]
    assert events[0]["timestamp"] == "2023-11-14T22:13:20Z"
    assert events[0]["values"] == dict.fromkeys(CHANNELS, 1.5)
    assert events[0]["received_at"] >= before


def test_a_large_batch_is_published_as_events_of_at_most_event_readings_each(app):
    client, published = app
    batch = [reading(index) for index in range(120)]
    assert client.post("/readings", json={"readings": batch}).status_code == 202
    sizes = [len(json.loads(request.content)["readings"]) for request in published]
    assert sizes == [50, 50, 20]
    ids = [event["id"] for request in published for event in json.loads(request.content)["readings"]]
    assert ids == [f"machine-0:{index}" for index in range(120)]


def test_with_events_bulk_a_batch_is_published_in_one_bulk_call_with_one_event_per_reading(app, monkeypatch):
    client, published = app
    monkeypatch.setattr(main.settings, "events", "bulk")
    before = time.time()
    assert client.post("/readings", json={"readings": [reading(0), reading(1)]}).status_code == 202
    assert [request.url.path for request in published] == ["/v1.0-alpha1/publish/bulk/pubsub/readings"]
    entries = json.loads(published[0].content)
    assert [entry["event"]["id"] for entry in entries] == ["machine-0:0", "machine-0:1"]
    assert entries[0]["event"]["received_at"] >= before


def test_with_events_single_each_reading_is_published_on_its_own(app, monkeypatch):
    client, published = app
    monkeypatch.setattr(main.settings, "events", "single")
    assert client.post("/readings", json={"readings": [reading(0), reading(1)]}).status_code == 202
    assert [request.url.path for request in published] == ["/v1.0/publish/pubsub/readings"] * 2


def test_a_failed_publish_is_a_5xx_so_the_sender_tries_again(app, caplog):
    """The answer names what failed and a request id; what the sidecar said goes to the log under that id."""
    client, _ = app
    failed = {"failedEntries": [{"entryId": "0", "error": "broker down"}]}
    main.app.state.sidecar = Sidecar(
        "http://sidecar", transport=httpx.MockTransport(lambda request: httpx.Response(500, json=failed))
    )
    response = client.post("/readings", json={"readings": [reading()]})
    assert response.status_code == 502
    error = response.json()["error"]
    assert "publish to pubsub/readings" in error and "broker down" not in error
    request_id = response.headers["x-request-id"]
    assert f"request id {request_id}" in error
    logged = [record for record in caplog.records if request_id in record.getMessage()]
    assert logged and "broker down" in str(logged[0].exc_info[1])


def without(mapping: dict, key: str) -> dict:
    return {name: value for name, value in mapping.items() if name != key}


BAD_BATCHES = {
    "unknown field in the batch": ({"readings": [reading()], "extra": 1}, 422, "extra"),
    "unknown field in a reading": ({"readings": [reading(colour="red")]}, 422, "colour"),
    "unknown channel": (
        {"readings": [reading(values={**dict.fromkeys(CHANNELS, 1.0), "vibration": 1.0})]},
        422,
        "vibration",
    ),
    "missing channel": (
        {"readings": [reading(values=without(dict.fromkeys(CHANNELS, 1.0), "fan_speed"))]},
        422,
        "fan_speed",
    ),
    "missing machine": ({"readings": [without(reading(), "machine")]}, 422, "machine"),
    "NaN as a string": ({"readings": [reading(values={**dict.fromkeys(CHANNELS, 1.0), "mach": "NaN"})]}, 422, "mach"),
    "infinity": ({"readings": [reading(values={**dict.fromkeys(CHANNELS, 1.0), "mach": "inf"})]}, 422, "mach"),
    "far future": ({"readings": [reading(timestamp=time.time() + 3600)]}, 400, "in the future"),
    "no time zone": ({"readings": [reading(timestamp="2025-01-01T00:00:00")]}, 422, "timezone"),
    "empty batch": ({"readings": []}, 422, "readings"),
    "oversized batch": ({"readings": [reading(index) for index in range(1001)]}, 422, "at most 1000"),
    "duplicate reading": ({"readings": [reading(0), reading(0)]}, 400, "appears twice"),
    "separator in machine id": ({"readings": [reading(machine="a||b")]}, 422, "machine"),
}


@pytest.mark.parametrize("case", BAD_BATCHES)
def test_bad_batches_get_a_4xx_naming_the_problem_and_nothing_is_published(app, case):
    client, published = app
    body, status, named = BAD_BATCHES[case]
    response = client.post("/readings", json=body)
    assert response.status_code == status, response.text
    assert named in response.json()["error"]
    assert published == []


def test_nan_sent_as_a_json_literal_is_refused(app):
    client, published = app
    body = json.dumps({"readings": [reading()]}).replace('"mach": 1.5', '"mach": NaN')
    assert math.isnan(json.loads(body)["readings"][0]["values"]["mach"])
    response = client.post("/readings", content=body, headers={"content-type": "application/json"})
    # NaN is no JSON (RFC 8259): the body is refused where it stands.
    assert response.status_code == 422
    assert f"'body.{body.index('NaN')}': JSON decode error" in response.json()["error"]
    assert published == []


def test_a_body_that_is_not_json_is_refused(app):
    client, _ = app
    response = client.post("/readings", content=b"machine-0,1,2", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "error" in response.json()


def test_with_partitions_each_machines_readings_go_to_its_partition_topic(app, monkeypatch):
    client, published = app
    monkeypatch.setattr(main.settings, "partitions", 4)
    machines = [f"machine-{index}" for index in range(12)]
    batch = [reading(index, machine=machine, id=f"{machine}:1") for index, machine in enumerate(machines)]
    assert client.post("/readings", json={"readings": batch}).status_code == 202
    topics = {}
    for request in published:
        topic = request.url.path.removeprefix("/v1.0/publish/pubsub/")
        topics[topic] = [event["machine"] for event in json.loads(request.content)["readings"]]
    expected = {}
    for machine in machines:
        expected.setdefault(f"readings.{partitions.partition(machine, 4)}", []).append(machine)
    assert topics == expected, "one event per partition, each machine's readings on its own partition"
