"""The alerts service's bulk deliveries against a fake sidecar (a state store): a machine's predictions delivered
in any order within a delivery are applied oldest first, so the alert opens at the first prediction that crosses
the threshold; a redelivery changes nothing; bad entries are dropped alone (bad inputs tried: an event that is not
predictions, a prediction without its probability, a prediction of another machine than the event names, a body
without entries, an event of JSON carried as a string that is not JSON). Events hold one machine's predictions (`{"machine", "predictions"}`) or several machines'."""

import asyncio
import json
import random
from types import SimpleNamespace

import httpx

from alerts import main
from tandem.sidecar import OPAQUE_JSON, Sidecar


def delivering(sidecar: Sidecar, body: bytes) -> SimpleNamespace:
    """A request of the sidecar's delivering `body`, as the handler sees it."""

    async def read() -> bytes:
        return body

    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(sidecar=sidecar)), body=read)


class FakeStore:
    def __init__(self):
        self.state: dict[str, tuple[object, int]] = {}
        self.written: list[str] = []  # keys, in the order written

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET":
            key = path.rsplit("/", 1)[1]
            if key not in self.state:
                return httpx.Response(204)
            value, version = self.state[key]
            return httpx.Response(200, json=value, headers={"etag": str(version)})
        body = json.loads(request.content)
        if path.endswith("/bulk"):
            return httpx.Response(200, json=[self._item(key) for key in body["keys"]])
        if path.endswith("/transaction"):
            stale = False
            for operation in body["operations"]:  # Redis: each key checked and written on its own
                stale |= not self._write(operation["request"])
            return httpx.Response(500, json={"errorCode": "ERR_STATE_TRANSACTION"}) if stale else httpx.Response(204)
        (item,) = body
        if not self._write(item):
            return httpx.Response(409, json={"errorCode": "ERR_STATE_SAVE"})
        return httpx.Response(204)

    def _item(self, key: str) -> dict:
        if key not in self.state:
            return {"key": key}
        value, version = self.state[key]
        return {"key": key, "data": value, "etag": str(version)}

    def _write(self, item: dict) -> bool:
        """Writes unless the item's etag is stale, or it is to be created and the key exists already."""
        current = self.state.get(item["key"])
        if "etag" in item and (current is None or item["etag"] != str(current[1])):
            return False
        if "etag" not in item and item.get("options") and current is not None:
            return False
        self.state[item["key"]] = (json.loads(json.dumps(item["value"])), (current or (None, 0))[1] + 1)
        self.written.append(item["key"])
        return True

    def deliver(self, events: list) -> dict[str, str]:
        sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(self.handle))
        entries = [{"entryId": str(index), "event": {"data": event}} for index, event in enumerate(events)]
        answer = asyncio.run(main.on_predictions(delivering(sidecar, json.dumps({"entries": entries}).encode())))  # type: ignore[arg-type]
        return {status["entryId"]: status["status"] for status in answer["statuses"]}


def prediction(machine: str, cycle: int, probability: float) -> dict:
    return {
        "id": f"{machine}/{cycle}",
        "machine": machine,
        "reading": f"{machine}:{cycle}",
        "timestamp": 1_700_000_000 + cycle,
        "received_at": 0.0,
        "rul": 10.0,
        "failure_probability": probability,
    }


def of(machine: str, predictions: list[dict]) -> dict:
    return {"machine": machine, "predictions": predictions}


def test_a_machines_predictions_in_any_order_open_the_alert_at_the_first_crossing():
    probabilities = [0.1, 0.2, 0.5, 0.75, 0.9, 0.95, 0.8]  # crosses 0.7 at cycle 3
    predictions = [prediction("m", cycle, p) for cycle, p in enumerate(probabilities)]
    # Events published one after another (each a machine's predictions in order) delivered side by side.
    events = [of("m", predictions[start : start + 2]) for start in range(0, len(predictions), 2)] + [
        of("n", [prediction("n", 0, 0.1)])
    ]
    store = FakeStore()
    assert set(store.deliver(random.Random(1).sample(events, len(events))).values()) == {"SUCCESS"}
    (alert,) = store.state["alerts"][0].values()  # type: ignore[union-attr]
    assert alert["opened_by"] == "m:3"
    assert store.state["machine-m"][0]["predictions"] == len(probabilities)  # type: ignore[index]
    before = dict(store.state)
    assert set(store.deliver(events).values()) == {"SUCCESS"}
    assert store.state == before


def test_events_of_several_machines_each_apply_every_machines_predictions_oldest_first():
    """As features publishes them: each event packs several machines' predictions, each machine's in order."""
    m = [prediction("m", cycle, p) for cycle, p in enumerate([0.1, 0.2, 0.75, 0.9, 0.1, 0.1])]  # crosses at 2
    n = [prediction("n", cycle, p) for cycle, p in enumerate([0.8, 0.9, 0.95])]  # crosses at 0
    # Two bulk publishes one after the other, each machine's next ones in the second, delivered side by side.
    events = [{"predictions": m[:3] + n[:2]}, {"predictions": m[3:] + n[2:]}]
    store = FakeStore()
    assert store.deliver(events[::-1]) == {"0": "SUCCESS", "1": "SUCCESS"}
    alerts = store.state["alerts"][0]
    assert {alert["machine"]: alert["opened_by"] for alert in alerts.values()} == {"m": "m:2", "n": "n:0"}  # type: ignore[union-attr]
    assert store.state["machine-m"][0]["predictions"] == 6  # type: ignore[index]
    assert store.state["machine-n"][0]["predictions"] == 3  # type: ignore[index]


def test_events_the_sidecars_carried_as_a_string_are_decoded_and_one_that_is_not_json_is_dropped_alone():
    store = FakeStore()
    sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(store.handle))
    opaque = {"predictions": [prediction("m", 0, 0.9)]}
    entries = [
        {"entryId": "0", "event": {"datacontenttype": OPAQUE_JSON, "data": json.dumps(opaque)}},
        {"entryId": "1", "event": {"datacontenttype": OPAQUE_JSON, "data": '{"predictions": ['}},
        {"entryId": "2", "event": {"datacontenttype": "text/plain", "data": json.dumps(opaque)}},
    ]
    answer = asyncio.run(main.on_predictions(delivering(sidecar, json.dumps({"entries": entries}).encode())))  # type: ignore[arg-type]
    assert {status["entryId"]: status["status"] for status in answer["statuses"]} == {
        "0": "SUCCESS",
        "1": "DROP",
        "2": "DROP",  # a string of another type is no predictions
    }
    (alert,) = store.state["alerts"][0].values()  # type: ignore[union-attr]
    assert alert["opened_by"] == "m:0"


def test_bad_entries_are_dropped_alone():
    store = FakeStore()
    no_probability = {key: value for key, value in prediction("m", 1, 0.1).items() if key != "failure_probability"}
    statuses = store.deliver(
        [
            of("m", [prediction("m", 0, 0.1)]),
            "not a prediction",
            of("m", [no_probability]),
            of("m", [prediction("n", 1, 0.1)]),
        ]
    )
    assert statuses == {"0": "SUCCESS", "1": "DROP", "2": "DROP", "3": "DROP"}
    assert store.state["machine-m"][0]["predictions"] == 1  # type: ignore[index]


def test_a_body_without_entries_is_refused():
    store = FakeStore()
    sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(store.handle))
    answer = asyncio.run(
        main.on_predictions(delivering(sidecar, json.dumps({"data": of("m", [prediction("m", 0, 0.1)])}).encode()))
    )  # type: ignore[arg-type]
    assert answer.status_code == 400


def test_a_deliverys_alerts_are_stored_in_one_write_before_the_machines_states():
    store = FakeStore()
    store.deliver([of("m", [prediction("m", 0, 0.8)])])  # m's alert opens
    store.written.clear()
    calm = [prediction("m", cycle, 0.1) for cycle in range(1, 6)]  # five calm predictions close it
    statuses = store.deliver([of("m", calm), of("n", [prediction("n", 0, 0.9)]), of("o", [prediction("o", 0, 0.75)])])
    assert set(statuses.values()) == {"SUCCESS"}
    assert store.written[0] == "alerts" and store.written.count("alerts") == 1
    assert sorted(store.written[1:]) == ["machine-m", "machine-n", "machine-o"]
    alerts = store.state["alerts"][0]
    assert {alert["id"]: alert["state"] for alert in alerts.values()} == {"m-1": "closed", "n-1": "open", "o-1": "open"}  # type: ignore[union-attr]
    assert alerts["m-1"]["closed_by"] == "m:5"  # type: ignore[index]


def test_the_alerts_document_keeps_every_open_alert_and_only_the_closed_ones_closed_last(monkeypatch):
    monkeypatch.setattr(main.settings, "max_closed_alerts", 2)
    store = FakeStore()
    calm = [0.1] * 5
    # Machines a, b and c each go through one episode, in turn; d's alert opens and stays open.
    for machine in "abc":
        store.deliver([of(machine, [prediction(machine, 0, 0.9)])])
        store.deliver([of(machine, [prediction(machine, cycle, p) for cycle, p in enumerate(calm, 1)])])
    store.deliver([of("d", [prediction("d", 0, 0.9)])])
    alerts = store.state["alerts"][0]
    assert {alert["id"]: alert["state"] for alert in alerts.values()} == {
        "b-1": "closed",
        "c-1": "closed",
        "d-1": "open",
    }  # type: ignore[union-attr]
    # a's close delivered again (as after a crash between the two writes) does not bring a-1 back as open.
    sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(store.handle))
    replayed = asyncio.run(
        main.record_changes(sidecar, [(main.Change("closed", "a-1"), main.Prediction(**prediction("a", 5, 0.1)))])
    )
    assert replayed == []
    assert "a-1" not in store.state["alerts"][0]  # type: ignore[operator]


def test_a_dead_letter_of_json_carried_as_a_string_is_kept_decoded_and_one_that_is_not_json_as_it_came():
    store = FakeStore()
    sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(store.handle))
    batch = {"readings": [{"machine": "m", "id": "m:1"}]}
    letters = [
        {"id": "a", "topic": "readings", "datacontenttype": OPAQUE_JSON, "data": json.dumps(batch)},
        {"id": "b", "topic": "readings", "datacontenttype": OPAQUE_JSON, "data": '{"readings": ['},
        {"id": "c", "topic": "predictions", "datacontenttype": "application/json", "data": batch},
    ]
    for letter in letters:
        assert asyncio.run(main.on_dead_letter(delivering(sidecar, b""), letter)) == {"status": "SUCCESS"}  # type: ignore[arg-type]
    kept = {letter["id"]: letter["data"] for letter in store.state["dead-letters"][0]}  # type: ignore[union-attr]
    assert kept == {"a": batch, "b": '{"readings": [', "c": batch}
