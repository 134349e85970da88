"""The features service's bulk deliveries against a fake sidecar (a state store with Redis's ETag semantics, bulk
publish, the models' OIP infer): a delivery of many readings gives exactly the predictions of the same readings one
at a time; bad entries are dropped alone; a window saved by another writer meanwhile is read again and nothing of
either writer is lost; readings the models refuse are dropped alone, the others of the delivery pass; an event may
hold a batch of readings, and one of a batch that cannot pass is split off into an event of its own.
Bad inputs tried: an event that is not a reading, a reading without one channel, a body without entries, a body
that is not JSON."""

import asyncio
import json
import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from features import main
from tandem import fleet
from tandem.protocol import HEADER_LENGTH, binary_outputs, decode_request, encode_response
from tandem.sidecar import OPAQUE_JSON, Sidecar


def delivering(sidecar: Sidecar, body: bytes) -> SimpleNamespace:
    """A request of the sidecar's delivering `body`, as the handler sees it."""

    async def read() -> bytes:
        return body

    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(sidecar=sidecar)), body=read)


class FakeSidecar:
    """What features asks of its sidecar, in memory. `on_transaction` runs before a transaction is applied."""

    def __init__(self, refuse: float | None = None):
        self.state: dict[str, tuple[Any, int]] = {}  # key -> (value, version)
        self.published: list[dict] = []
        self.rounds: list[list[dict]] = []  # the prediction events published at once, round by round
        self.publishing = 0  # prediction events being published
        self.split_off: list[tuple[str, dict]] = []  # (topic, reading) published again alone
        self.infer_calls = 0
        self.refuse = refuse  # the models answer 400 to a batch with a row whose first feature equals this
        self.on_transaction = lambda: None

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/v2/models/" in path:
            return self._infer(path.split("/")[-2], request)
        body = json.loads(request.content or b"null")
        if path.endswith("/bulk") and path.startswith("/v1.0/state/"):
            return httpx.Response(200, json=[self._item(key) for key in body["keys"]])
        if path.endswith("/transaction"):
            self.on_transaction()
            stale = False
            for operation in body["operations"]:  # Redis: each key checked and written on its own
                request_ = operation["request"]
                if "etag" in request_ and str(self.state[request_["key"]][1]) != request_["etag"]:
                    stale = True
                    continue
                self._write(request_["key"], request_["value"])
            return httpx.Response(500, json={"errorCode": "ERR_STATE_TRANSACTION"}) if stale else httpx.Response(204)
        if path.startswith("/v1.0/state/"):
            (item,) = body
            if item["key"] in self.state:
                return httpx.Response(409, json={"errorCode": "ERR_STATE_SAVE"})
            self._write(item["key"], item["value"])
            return httpx.Response(204)
        if path == f"/v1.0/publish/pubsub/{main.settings.predictions_topic}":
            assert request.headers["content-type"] == OPAQUE_JSON
            return self._publish_prediction_event(body)
        if path.startswith("/v1.0/publish/pubsub/"):  # a reading of a batch split off
            self.split_off.append((path.removeprefix("/v1.0/publish/pubsub/"), body))
            return httpx.Response(204)
        raise AssertionError(f"unexpected call {request.method} {path}")

    async def _publish_prediction_event(self, event: dict) -> httpx.Response:
        """Events published while others are still being published were published at once: they are stored in any
        order, so each machine's predictions must be in only one of them."""
        if not self.publishing:
            self.rounds.append([])
        self.rounds[-1].append(event)
        self.publishing += 1
        await asyncio.sleep(0.001)  # the others published at once come meanwhile
        self.publishing -= 1
        if not self.publishing:
            machines = [{prediction["machine"] for prediction in event["predictions"]} for event in self.rounds[-1]]
            assert sum(len(of_event) for of_event in machines) == len(set().union(*machines))
        self.published += event["predictions"]
        return httpx.Response(204)

    def _item(self, key: str) -> dict:
        if key not in self.state:
            return {"key": key}
        value, version = self.state[key]
        return {"key": key, "data": value, "etag": str(version)}

    def _write(self, key: str, value: Any) -> None:
        self.state[key] = (json.loads(json.dumps(value)), self.state.get(key, (None, 0))[1] + 1)

    def _infer(self, model: str, request: httpx.Request) -> httpx.Response:
        """A stand-in model behind the kit's own codec: it takes and gives what an OIP server does."""
        self.infer_calls += 1
        parsed, inputs = decode_request(request.content, request.headers.get(HEADER_LENGTH))
        rows = inputs[main.MODEL_INPUT]
        if self.refuse is not None and np.isclose(rows[:, 0], self.refuse).any():
            return httpx.Response(400, json={"error": "refused"})
        score = rows.sum(axis=1, keepdims=True)  # any function of the row tells rows apart
        if model == main.settings.rul_model:
            outputs = {"rul": score}
        else:
            probability = np.abs(score) % 1
            outputs = {"probabilities": np.hstack([1 - probability, probability])}
        body, headers = encode_response(model, "1", None, outputs, binary_outputs(parsed, list(outputs)))
        return httpx.Response(200, content=body, headers=headers)

    def deliver(self, events: list[Any], topic: str = "readings") -> dict[str, str]:
        """One bulk delivery of `events` (CloudEvent data) from `topic`; the status of each, by index."""
        (statuses,) = self.deliver_at_once([events], topic)
        return statuses

    def deliver_at_once(self, deliveries: list[list[Any]], topic: str = "readings") -> list[dict[str, str]]:
        """Bulk deliveries handed to features side by side; the status of each event, by index, per delivery."""
        sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(self.handle))

        async def handle(events: list[Any]) -> Any:
            entries = [{"entryId": str(index), "event": {"data": event}} for index, event in enumerate(events)]
            body = json.dumps({"entries": entries, "topic": topic}).encode()
            return await main.on_readings(delivering(sidecar, body))  # type: ignore[arg-type]

        async def all_at_once() -> list[Any]:
            return await asyncio.gather(*(handle(events) for events in deliveries))

        return [
            {status["entryId"]: status["status"] for status in answer["statuses"]}
            for answer in asyncio.run(all_at_once())
        ]


def readings(machine_id: int, count: int) -> list[dict]:
    machine = fleet.make_machine(0, machine_id)
    return [
        {
            "machine": f"m{machine_id}",
            "id": f"m{machine_id}:{reading.cycle}",
            "timestamp": 1_700_000_000 + reading.cycle,
            "values": reading.values,
            "received_at": float(reading.cycle),
        }
        for reading in fleet.readings(machine)
    ][:count]


def predictions(fake: FakeSidecar) -> dict[str, tuple]:
    return {p["id"]: (p["reading"], tuple(p["readings"]), p["rul"], p["failure_probability"]) for p in fake.published}


def test_a_bulk_delivery_gives_exactly_the_predictions_of_one_reading_at_a_time():
    events = readings(1, 70) + readings(2, 45)
    one_by_one = FakeSidecar()
    for event in events:
        assert one_by_one.deliver([event]) == {"0": "SUCCESS"}
    in_bulk = FakeSidecar()
    for start in range(0, len(events), 25):  # more readings of a machine at once than a window keeps beyond its own
        chunk = events[start : start + 25]
        delivery = random.Random(start).sample(chunk, len(chunk))  # a bulk publish is stored in any order
        assert set(in_bulk.deliver(delivery).values()) == {"SUCCESS"}
    assert len(one_by_one.published) == (70 - 29) + (45 - 29)  # every reading from the 30th on, once
    assert predictions(in_bulk) == predictions(one_by_one)
    assert len(in_bulk.published) == len(one_by_one.published)
    for machine in ("m1", "m2"):  # alerts judges a machine by its newest prediction: each machine's in order
        published = [p["timestamp"] for p in in_bulk.published if p["machine"] == machine]
        assert published == sorted(published)
    # One call per model per delivery, not per reading (the first delivery only fills a window).
    assert in_bulk.infer_calls == 2 * 4
    assert in_bulk.state == {key: (value, in_bulk.state[key][1]) for key, (value, _) in one_by_one.state.items()}


def test_a_redelivery_changes_nothing():
    fake = FakeSidecar()
    events = readings(1, 40)
    fake.deliver(events)
    state, published = dict(fake.state), len(fake.published)
    assert set(fake.deliver(events[-5:]).values()) == {"SUCCESS"}
    assert fake.state == state
    assert len(fake.published) == published


def test_bad_entries_are_dropped_alone():
    fake = FakeSidecar()
    good = readings(1, 3)
    no_channel = {**good[2], "id": "m1:x", "values": dict(list(good[2]["values"].items())[1:])}
    statuses = fake.deliver([good[0], "not a reading", {"machine": "m1"}, no_channel, good[1]])
    assert statuses == {"0": "SUCCESS", "1": "DROP", "2": "DROP", "3": "DROP", "4": "SUCCESS"}
    assert fake.state["window-m1"][0]["count"] == 2


def test_a_body_without_entries_is_refused():
    fake = FakeSidecar()
    sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(fake.handle))
    answer = asyncio.run(main.on_readings(delivering(sidecar, json.dumps({"data": readings(1, 1)[0]}).encode())))  # type: ignore[arg-type]
    assert answer.status_code == 400
    assert b"entries" in answer.body


def test_a_window_saved_by_another_writer_meanwhile_is_read_again_and_both_writers_readings_stay():
    fake = FakeSidecar()
    first, second = readings(1, 40), readings(2, 40)
    fake.deliver(first[:35] + second[:35])
    other = first[35]

    def another_replica_writes_first() -> None:
        fake.on_transaction = lambda: None
        value, version = fake.state["window-m1"]
        window = main.Window.from_state(value)
        window.add(other["id"], other["timestamp"], other["values"])
        fake.state["window-m1"] = (window.to_state(), version + 1)

    fake.on_transaction = another_replica_writes_first
    assert set(fake.deliver(first[36:] + second[35:]).values()) == {"SUCCESS"}
    # m2's window was written by the failed transaction, m1's was not: read again, m1's readings are added to what
    # the other writer saved, m2's are already there.
    assert fake.state["window-m1"][0]["count"] == 40
    assert fake.state["window-m2"][0]["count"] == 40
    assert {p["reading"] for p in fake.published} >= {f"m1:{cycle}" for cycle in range(37, 41)}


@pytest.mark.parametrize("batch", [False, True])
def test_readings_the_models_refuse_are_dropped_alone(batch: bool):
    events = readings(1, 31) + readings(2, 30)
    refused = main.Window()
    for event in events[:30]:
        refused.add(event["id"], event["timestamp"], event["values"])
    fake = FakeSidecar(refuse=float(refused.features("m1:30")[0][0]))  # type: ignore[index]
    statuses = fake.deliver(events) if batch else {str(i): fake.deliver([e])["0"] for i, e in enumerate(events)}
    assert statuses["29"] == "DROP"  # m1:30 completes the window the models refuse
    assert {status for index, status in statuses.items() if index != "29"} == {"SUCCESS"}
    assert {p["reading"] for p in fake.published} == {"m1:31", "m2:30"}


def test_deliveries_that_arrive_together_are_processed_as_one_and_each_gets_its_own_statuses():
    """Entry ids are a delivery's own: the same ids in two deliveries are two readings."""
    one_by_one = FakeSidecar()
    for event in readings(1, 40) + readings(2, 40):
        one_by_one.deliver([event])
    together = FakeSidecar()
    together.deliver(readings(1, 35) + readings(2, 35))
    calls_before = together.infer_calls
    not_a_reading = {"machine": "m1"}
    first, second = together.deliver_at_once([readings(1, 40)[35:] + [not_a_reading], readings(2, 40)[35:]])
    assert first == {"0": "SUCCESS", "1": "SUCCESS", "2": "SUCCESS", "3": "SUCCESS", "4": "SUCCESS", "5": "DROP"}
    assert second == {str(index): "SUCCESS" for index in range(5)}
    assert together.infer_calls - calls_before == 2  # one call per model for both deliveries
    assert predictions(together) == predictions(one_by_one)


def test_a_body_that_is_not_json_is_refused():
    fake = FakeSidecar()
    sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(fake.handle))
    answer = asyncio.run(main.on_readings(delivering(sidecar, b"{entries")))  # type: ignore[arg-type]
    assert answer.status_code == 400
    assert b"not JSON" in answer.body


def test_a_reading_too_late_for_its_window_is_dropped_and_the_rest_of_its_delivery_passes():
    """m1:50 is redelivered after 20 newer readings of its machine (as after the pub/sub's processingTimeout): the
    readings its window needs left the window. It goes to the dead-letter topic, uncounted; m2's reading beside it
    is predicted."""
    first, second = readings(1, 71), readings(2, 31)
    late = first.pop(49)
    fake = FakeSidecar()
    fake.deliver(first + second[:30])
    before = fake.state["window-m1"][0]
    statuses = fake.deliver([late, second[30]])
    assert statuses == {"0": "DROP", "1": "SUCCESS"}
    assert fake.state["window-m1"][0] == before
    assert before["count"] == 70
    assert "m1:50" not in {p["reading"] for p in fake.published}
    assert fake.published[-1]["reading"] == "m2:31"


def test_batch_events_give_exactly_the_predictions_of_one_reading_at_a_time():
    """Events as the sensors service publishes them: one per batch, `{"readings": [...]}`, a reading of each
    machine per tick."""
    first, second = readings(1, 70), readings(2, 45)
    one_by_one = FakeSidecar()
    for event in first + second:
        one_by_one.deliver([event])
    in_batches = FakeSidecar()
    ticks = [[first[t], second[t]] if t < len(second) else [first[t]] for t in range(len(first))]
    for start in range(0, len(ticks), 20):
        events = [{"readings": tick} for tick in ticks[start : start + 20]]
        assert set(in_batches.deliver(events).values()) == {"SUCCESS"}
    assert predictions(in_batches) == predictions(one_by_one)
    assert in_batches.split_off == []


def test_a_reading_of_a_batch_that_cannot_pass_is_split_off_and_the_rest_of_the_batch_passes():
    """m1:50 comes again after 20 newer readings of its machine, in a batch beside m2's next reading, and m2's
    reading after that lacks a channel: each is published again alone (to its machine's partition of the topic,
    where it is dropped to the dead letters as an event of its own would be), and the batch's entry succeeds."""
    first, second = readings(1, 71), readings(2, 32)
    late = first.pop(49)
    fake = FakeSidecar()
    fake.deliver(first + second[:30])
    no_channel = {**second[31], "values": dict(list(second[31]["values"].items())[1:])}
    statuses = fake.deliver([{"readings": [late, second[30], no_channel]}])
    assert statuses == {"0": "SUCCESS"}
    assert [(topic, reading["id"]) for topic, reading in fake.split_off] == [
        ("readings", "m1:50"),
        ("readings", "m2:32"),
    ]
    assert fake.published[-1]["reading"] == "m2:31"
    assert fake.deliver([fake.split_off[0][1]]) == {"0": "DROP"}  # alone, it is dropped
    assert fake.deliver([fake.split_off[1][1]]) == {"0": "DROP"}


def test_a_batch_of_one_reading_that_cannot_pass_is_split_off_too():
    """So that a dead letter is always one reading, never a batch."""
    events = readings(1, 71)
    late = events.pop(49)
    fake = FakeSidecar()
    fake.deliver(events)
    assert fake.deliver([{"readings": [late]}], topic="readings.3") == {"0": "SUCCESS"}
    assert [(topic, reading["id"]) for topic, reading in fake.split_off] == [("readings.3", "m1:50")], (
        "published again to the topic (the partition) it came from"
    )


def test_predictions_go_in_events_of_at_most_event_predictions_each_machines_in_one_of_those_published_at_once(
    monkeypatch: pytest.MonkeyPatch,
):
    # 200 readings of m1, 40 of m2 and 35 of m3 in one delivery: 171, 11 and 6 predictions. Each round of events
    # published at once holds each machine's next 50 in one event, machines packed together; as one event each, a delivery of alerts could
    # pass its body limit (it did, under load, with 413s).
    monkeypatch.setattr(main.settings, "event_predictions", 50)
    fake = FakeSidecar()
    assert set(fake.deliver(readings(1, 200) + readings(2, 40) + readings(3, 35)).values()) == {"SUCCESS"}
    shapes = [
        [sorted(Counter(prediction["machine"] for prediction in event["predictions"]).items()) for event in events]
        for events in fake.rounds
    ]
    assert shapes == [
        [[("m1", 50)], [("m2", 11), ("m3", 6)]],
        [[("m1", 50)]],
        [[("m1", 50)]],
        [[("m1", 21)]],
    ]
    published = [p["timestamp"] for p in fake.published if p["machine"] == "m1"]
    assert published == sorted(published) and len(published) == 171
