"""The predictive-maintenance pipeline on real parts: sensors -> readings -> features (-> regression) ->
predictions -> alerts, each app beside its own daprd, Redis Streams and the Redis state store in between.

Every case feeds machines of the seeded fleet through the sensors sidecar, as the simulator does, and checks what a
user would: every reading counted exactly once by features, every prediction exactly once by alerts, and exactly
the alerts that the models give on the same windows computed here, from the same fleet, in-process.
"""

import contextlib
import itertools
import json
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sensors.simulate import FIRST_UNSEEN, post, ticks
from tandem import fleet, partitions

from .stack import Sidecar, Stack, editing, retry_deliveries, set_metadata, wait_until

pytestmark = pytest.mark.integration

SEED = 0
OPEN_AT, CLOSE_AT, CLOSE_AFTER = 0.7, 0.3, 5  # the alerts service's defaults


class Pipeline:
    def __init__(
        self,
        stack: Stack,
        sidecars: dict[str, Sidecar],
        app_env: dict[str, str],
        resources: Path,
    ):
        self.stack = stack
        self.resources = resources
        self.app_env = app_env
        self.sidecars = sidecars
        self.http = httpx.Client(headers={"dapr-api-token": stack.dapr_api_token}, timeout=30)

    def invoke(self, app: str, method: str) -> Any:
        """GET `method` of `app` (a key of `sidecars`) through its sidecar."""
        response = self.http.get(f"{self.sidecars[app].url}/v1.0/invoke/{self.sidecars[app].app_id}/method/{method}")
        assert response.status_code == 200, response.text
        return response.json()

    def feed(
        self,
        machines: int,
        prefix: str,
        pause_after: int = 0,
        pause: threading.Event | None = None,
        from_tick: int = 0,
        to_tick: int | None = None,
        sensors: str = "sensors",
    ) -> int:
        """Posts every reading of `machines` fresh machines (or those of ticks from_tick to to_tick, excluded), tick by
        tick, through the sidecar of `sensors`."""
        url = f"{self.sidecars[sensors].url}/v1.0/invoke/{self.sidecars[sensors].app_id}/method/readings"
        sent = 0
        every_tick = enumerate(ticks(machines, SEED, replace=False, prefix=prefix))
        for tick, batch in itertools.islice(every_tick, from_tick, to_tick):
            if pause is not None and tick == pause_after:
                pause.set()
            for reading in batch:
                reading["timestamp"] = 1_700_000_000 + tick
            post(self.http, url, batch)
            sent += len(batch)
        return sent

    def feed_until_midway(self, machines: int, prefix: str, midway: int = 120) -> threading.Thread:
        """Feeds `machines` fresh machines in a thread of their own; returns it once `midway` ticks were posted."""
        posted = threading.Event()
        feeder = threading.Thread(target=self.feed, args=(machines, prefix, midway, posted))
        feeder.start()
        assert posted.wait(120), f"{midway} ticks not posted within 120 s"
        return feeder

    def late_readings(self, machines: Iterable[str]) -> dict[str, set[int]]:
        """The cycles of each machine's readings in the dead letters (too late for their windows)."""
        found: dict[str, set[int]] = {machine: set() for machine in machines}
        for letter in self.invoke("alerts", "dead-letters"):
            data = letter["data"]
            if letter["topic"] == "readings" and isinstance(data, dict) and data.get("machine") in found:
                found[data["machine"]].add(int(data["id"].rsplit(":", 1)[1]))
        return found

    def wait_for_everything(
        self, machines: int, prefix: str, timeout: float = 240, features: str = "features", late: bool = False
    ) -> dict[str, set[int]]:
        """Waits until features counted every reading of the machines and alerts applied every prediction. With
        `late`, a reading may instead be in the dead letters as too late for its window (redelivered after newer
        readings pushed out those its window needs): it is then neither counted nor predicted. Returns the cycles of
        the late readings of each machine that had any."""
        expected = {f"{prefix}{slot}": machine_lifetime(slot) for slot in range(machines)}

        def late_readings() -> dict[str, set[int]]:
            return self.late_readings(expected) if late else {machine: set() for machine in expected}

        def counts() -> dict[str, tuple[int, int, int, int]]:
            """(readings, expected, predictions, expected) per machine."""
            cycles = late_readings()
            return {
                machine: (
                    self.invoke(features, f"machines/{machine}")["readings"],
                    lifetime - len(cycles[machine]),
                    self.invoke("alerts", f"machines/{machine}")["predictions"],
                    lifetime - fleet.WINDOW + 1 - sum(cycle >= fleet.WINDOW for cycle in cycles[machine]),
                )
                for machine, lifetime in expected.items()
            }

        try:
            wait_until(
                lambda: all(
                    readings == want and predictions == wanted
                    for readings, want, predictions, wanted in counts().values()
                ),
                "every reading and prediction processed",
                timeout=timeout,
            )
        except TimeoutError:
            dead = [letter for letter in self.invoke("alerts", "dead-letters") if prefix in json.dumps(letter)]
            raise TimeoutError(
                f"(readings, expected, predictions, expected) per machine: {counts()}; dead letters: {dead}"
            ) from None
        return {machine: cycles for machine, cycles in late_readings().items() if cycles}


def machine_lifetime(slot: int) -> int:
    return fleet.make_machine(SEED, FIRST_UNSEEN + slot).lifetime


def expected_alerts(slot: int, failure_model: ort.InferenceSession) -> list[tuple[str, float]]:
    """(reading id that opens it, failure probability) of each episode the alerts service should open for the
    machine in `slot`: the models run here on the same windows, the thresholds applied in reading order."""
    machine = fleet.make_machine(SEED, FIRST_UNSEEN + slot)
    features = fleet.rolling_features(fleet.simulate(machine))
    probabilities = failure_model.run(["probabilities"], {"input": features})[0][:, 1]
    opened, calm, episodes = False, 0, []
    for row, probability in enumerate(probabilities):
        cycle = row + fleet.WINDOW
        if not opened and probability >= OPEN_AT:
            opened, calm = True, 0
            episodes.append((f"{machine.id}:{cycle}", float(probability)))
        elif opened:
            calm = calm + 1 if probability <= CLOSE_AT else 0
            if calm >= CLOSE_AFTER:
                opened, calm = False, 0
    return episodes


def check_alerts(
    pipeline: Pipeline, machines: int, prefix: str, failure_model: ort.InferenceSession, but: Iterable[str] = ()
) -> None:
    """Each machine's alerts are those the models give on its windows here; `but` the machines that had a late
    reading (the windows after it were computed without it)."""
    for slot in range(machines):
        if f"{prefix}{slot}" in but:
            continue
        alerts = pipeline.invoke("alerts", f"alerts?machine={prefix}{slot}")
        expected = expected_alerts(slot, failure_model)
        assert expected, "every machine runs until it fails: each one should raise an alert"
        assert [alert["opened_by"] for alert in alerts] == [f"{prefix}{slot}:{reading}" for reading, _ in expected]
        for alert, (_, probability) in zip(alerts, expected, strict=True):
            assert alert["failure_probability"] == pytest.approx(probability, abs=1e-6)


def pipeline_pace(resources: Path) -> None:
    """Redeliver unacknowledged messages after 10 s, retry a failed delivery every 0.5 s for 30 s."""
    with editing(resources / "pubsub.yaml") as pubsub:
        set_metadata(pubsub, processingTimeout="10s", redeliverInterval="1s")
    retry_deliveries(resources, every="500ms", times=60)


@pytest.fixture(scope="module")
def pipeline(stack: Stack, model_repository: Path):
    resources = stack.work / "pipeline-components"
    shutil.copytree(stack.components({}), resources)
    pipeline_pace(resources)
    sidecars = {}
    sidecars["regression"], _ = stack.start_app_beside_sidecar(
        "regression", resources, REGRESSION_MODEL_REPOSITORY=str(model_repository)
    )
    app_env = {"FEATURES_REGRESSION_APP": sidecars["regression"].app_id}
    for app in ("alerts", "features", "sensors"):
        sidecars[app], _ = stack.start_app_beside_sidecar(app, resources, **app_env)
    yield Pipeline(stack, sidecars, app_env, resources)


@pytest.fixture(scope="module")
def failure_model(model_repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_repository / "maintenance-failure" / "1" / "model.onnx"))


def test_readings_in_give_exactly_the_expected_predictions_and_alerts_out(pipeline, failure_model):
    machines, prefix = 3, f"e2e-{uuid.uuid4().hex[:6]}-"
    streamed: list[str] = []
    listening = threading.Event()

    def listen() -> None:
        # Through the alerts sidecar, as a user reaches it: daprd passes the event stream on as it comes.
        alerts = pipeline.sidecars["alerts"]
        url = f"{alerts.url}/v1.0/invoke/{alerts.app_id}/method/alerts/stream"
        with contextlib.suppress(httpx.RemoteProtocolError):  # the stack stopping under an open stream
            with pipeline.http.stream("GET", url, timeout=httpx.Timeout(30, read=None)) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                listening.set()
                for line in response.iter_lines():
                    if line.startswith("data: ") and prefix in line:
                        streamed.append(line)

    threading.Thread(target=listen, daemon=True).start()
    assert listening.wait(20), "the alert stream did not open through the sidecar"

    sent = pipeline.feed(machines, prefix)
    assert sent == sum(machine_lifetime(slot) for slot in range(machines))
    pipeline.wait_for_everything(machines, prefix)
    check_alerts(pipeline, machines, prefix, failure_model)

    last = pipeline.invoke("alerts", f"machines/{prefix}0")["last"]
    machine = fleet.make_machine(SEED, FIRST_UNSEEN)
    final_window = fleet.rolling_features(fleet.simulate(machine))[-1:]
    assert last["reading"] == f"{prefix}0:{machine.id}:{machine.lifetime}"
    assert last["failure_probability"] == pytest.approx(
        float(failure_model.run(["probabilities"], {"input": final_window})[0][0, 1]), abs=1e-6
    )
    opened = [alert["id"] for alert in pipeline.invoke("alerts", "alerts") if alert["machine"].startswith(prefix)]
    wait_until(lambda: len(streamed) >= len(opened), "every alert streamed", timeout=10)
    assert sorted(json.loads(line.removeprefix("data: "))["id"] for line in streamed) == sorted(opened)


def test_kill_9_of_features_mid_stream_loses_no_reading_and_duplicates_no_alert(pipeline, failure_model):
    machines, prefix = 3, f"kill-{uuid.uuid4().hex[:6]}-"
    feeder = pipeline.feed_until_midway(machines, prefix)
    features = next(process for process in pipeline.stack.processes if process.name.startswith("features"))
    features.stop(signal.SIGKILL)
    time.sleep(1)  # readings keep coming in meanwhile: sensors is up, the broker keeps them
    features.restart()
    live = (
        f"{pipeline.sidecars['features'].url}/v1.0/invoke/{pipeline.sidecars['features'].app_id}/method/v2/health/live"
    )
    wait_until(lambda: pipeline.http.get(live).status_code == 200, "features live again", process=features)
    feeder.join()
    pipeline.wait_for_everything(machines, prefix)
    check_alerts(pipeline, machines, prefix, failure_model)


def test_redis_killed_and_restarted_mid_stream_loses_nothing(pipeline, failure_model):
    machines, prefix = 3, f"redis-{uuid.uuid4().hex[:6]}-"
    feeder = pipeline.feed_until_midway(machines, prefix)
    redis = next(process for process in pipeline.stack.processes if process.name == "redis")
    redis.stop(signal.SIGKILL)  # no chance to write anything out: what it acknowledged must already be on disk
    pipeline.stack.processes.remove(redis)
    time.sleep(2)  # sensors answers 5xx meanwhile, and the feeder sends those batches again, as the simulator does
    pipeline.stack.start_redis(pipeline.stack.redis_port)
    feeder.join()
    # A delivery cut off by the kill (Redis had handed its readings to the features sidecar, which never got them)
    # comes again after the processingTimeout, by when newer readings pushed out those its windows need: such a
    # reading is dead-lettered as late, never counted without its prediction.
    late = pipeline.wait_for_everything(machines, prefix, late=True)
    print("cycles of the readings too late for their windows, per machine:", late)
    check_alerts(pipeline, machines, prefix, failure_model, but=late)


def test_a_reading_too_late_for_its_window_goes_to_the_dead_letters_and_is_not_counted(pipeline):
    # Held back while its machine's next 40 readings pass: those its window needs are gone when it comes.
    prefix, held_tick = f"late-{uuid.uuid4().hex[:6]}-", 40
    machine, lifetime = f"{prefix}0", machine_lifetime(0)
    url = f"{pipeline.sidecars['sensors'].url}/v1.0/invoke/{pipeline.sidecars['sensors'].app_id}/method/readings"
    held: list[dict[str, Any]] = []
    for tick, batch in enumerate(ticks(1, SEED, replace=False, prefix=prefix)):
        for reading in batch:
            reading["timestamp"] = 1_700_000_000 + tick
        if tick == held_tick:
            held = batch
        else:
            post(pipeline.http, url, batch)
    assert held_tick + 40 < lifetime
    predicted = lifetime - fleet.WINDOW  # every reading's from the WINDOW-th on but the held one's
    wait_until(
        lambda: (
            pipeline.invoke("features", f"machines/{machine}")["readings"] == lifetime - 1
            and pipeline.invoke("alerts", f"machines/{machine}")["predictions"] == predicted
        ),
        "every other reading and prediction processed",
        timeout=120,
    )
    post(pipeline.http, url, held)
    # A dead letter of its machine, published on `readings`: the held reading's cycle and no other.
    wait_until(lambda: pipeline.late_readings([machine])[machine], "the late reading dead-lettered", timeout=60)
    assert pipeline.late_readings([machine]) == {machine: {int(held[0]["id"].rsplit(":", 1)[1])}}
    assert pipeline.invoke("features", f"machines/{machine}")["readings"] == lifetime - 1
    assert pipeline.invoke("alerts", f"machines/{machine}")["predictions"] == predicted


def test_a_poison_message_goes_to_the_dead_letter_topic_and_the_pipeline_flows_on(pipeline, failure_model):
    sensors = pipeline.sidecars["sensors"].url
    poison = {
        "readings": {"poison": uuid.uuid4().hex, "machine": "no-such-shape"},  # not a reading at all
        "predictions": {"poison": uuid.uuid4().hex, "failure_probability": "high"},
    }
    for topic, data in poison.items():
        response = pipeline.http.post(f"{sensors}/v1.0/publish/pubsub/{topic}", json=data)
        assert response.status_code == 204, response.text
    machines, prefix = 1, f"after-poison-{uuid.uuid4().hex[:6]}-"
    pipeline.feed(machines, prefix)
    pipeline.wait_for_everything(machines, prefix)
    check_alerts(pipeline, machines, prefix, failure_model)

    def dead_letters() -> dict[str, dict]:
        letters = pipeline.invoke("alerts", "dead-letters")
        return {
            letter["data"]["poison"]: letter
            for letter in letters
            if isinstance(letter["data"], dict) and "poison" in letter["data"]
        }

    wait_until(lambda: all(data["poison"] in dead_letters() for data in poison.values()), "poison dead-lettered")
    letters = dead_letters()
    for topic, data in poison.items():
        assert letters[data["poison"]]["data"] == data
        assert letters[data["poison"]]["topic"] == topic  # where it was published, before it went dead


def quick_to_give_up(pipeline: Pipeline, app_id: str, topic: str) -> Path:
    """The pipeline's resources for a features app `app_id` of its own that takes `topic` (dead letters still to
    readings-dead) and gives a failing delivery up after 10 retries 0.2 s apart."""
    resources = pipeline.stack.work / f"{app_id}-components"
    shutil.copytree(pipeline.resources, resources)
    for path in resources.glob("subscription-*.yaml"):
        if path.name != "subscription-readings.yaml":
            path.unlink()
    with editing(resources / "subscription-readings.yaml") as subscription:
        subscription["metadata"]["name"] = app_id
        subscription["spec"]["topic"], subscription["scopes"] = topic, [app_id]
    for name in ("pubsub.yaml", "statestore.yaml"):
        with editing(resources / name) as component:
            component["scopes"].append(app_id)
    with editing(resources / "pubsub.yaml") as pubsub:
        # Not delivered again while the first delivery is still being retried (about 30 s with the regression app
        # down): a second delivery would wait for the first's machine lock and spend its retries slower.
        set_metadata(pubsub, processingTimeout="60s")
    retry_deliveries(resources, every="200ms", times=10)
    return resources


def test_readings_that_keep_failing_are_dead_lettered_once_retries_are_spent_and_the_machine_goes_on(pipeline):
    # The regression app is down for longer than the delivery policy retries: the readings whose window needs the
    # models are answered RETRY until the retries are spent, then daprd sends them to readings-dead. Once regression
    # is back, the same machine's next readings are predicted again. A features app of its own, with a policy that
    # gives up sooner than the pipeline's (which rides out a features restart), keeps this test short.
    app_id, topic = f"features-{uuid.uuid4().hex[:6]}", f"readings-{uuid.uuid4().hex[:6]}"
    sidecar, _ = pipeline.stack.start_app_beside_sidecar(
        "features", quick_to_give_up(pipeline, app_id, topic), app_id=app_id, **pipeline.app_env
    )
    regression = next(process for process in pipeline.stack.processes if process.name.startswith("regression"))
    regression_id = pipeline.app_env["FEATURES_REGRESSION_APP"]
    ready = f"{pipeline.sidecars['regression'].url}/v1.0/invoke/{regression_id}/method/v2/health/ready"
    machine = f"outage-{uuid.uuid4().hex[:6]}"
    readings = [
        {
            "machine": machine,
            "id": f"{machine}:{reading.cycle}",
            "timestamp": datetime.fromtimestamp(1_700_000_000 + reading.cycle, UTC).isoformat(),
            "values": reading.values,
            "received_at": time.time(),
        }
        for reading in itertools.islice(fleet.readings(fleet.make_machine(SEED, FIRST_UNSEEN)), fleet.WINDOW + 3)
    ]
    # The last of `failing` completes the machine's first window: the models are needed.
    windowing, failing, after = readings[: fleet.WINDOW - 1], readings[fleet.WINDOW - 1 : -3], readings[-3:]

    def publish(events: list[dict]) -> None:
        for event in events:
            response = pipeline.http.post(f"{sidecar.url}/v1.0/publish/pubsub/{topic}", json=event)
            assert response.status_code == 204, response.text

    def dead_letters() -> dict[str, dict]:
        letters = pipeline.invoke("alerts", "dead-letters")
        return {letter["data"]["id"]: letter for letter in letters if letter["topic"] == topic}

    def window() -> int:
        return pipeline.http.get(f"{sidecar.url}/v1.0/invoke/{app_id}/method/machines/{machine}").json()["readings"]

    publish(windowing)
    wait_until(lambda: window() == len(windowing), "a window short of one reading")
    regression.stop(signal.SIGKILL)
    try:
        publish(failing)
        wait_until(lambda: len(dead_letters()) == len(failing), "the failing reading dead-lettered", timeout=120)
    finally:
        regression.restart()
    wait_until(lambda: pipeline.http.get(ready).status_code == 200, "regression ready again", timeout=60)
    letters = dead_letters()
    assert set(letters) == {event["id"] for event in failing}
    for event in failing:
        # Dapr's Redis state store writes most numbers with six decimals (jsoniter's fastest configuration), and the
        # alerts service keeps dead letters in the state store.
        assert letters[event["id"]]["data"] == {**event, "values": pytest.approx(event["values"], abs=1e-6)}
    # What was dead-lettered never entered the window, and nothing of it reached alerts.
    assert window() == len(windowing)
    assert pipeline.invoke("alerts", f"machines/{machine}")["predictions"] == 0

    publish(after)
    wait_until(
        lambda: pipeline.invoke("alerts", f"machines/{machine}")["predictions"] == len(after),
        "the machine's later readings predicted",
        timeout=60,
    )
    assert window() == len(windowing) + len(after)
    assert len(dead_letters()) == len(failing)


def test_two_features_replicas_keep_every_reading_of_a_window_exactly_once(pipeline):
    # A second replica: same app id, so the broker splits the readings between the two consumers and readings of
    # one machine are windowed by both; ETags keep either from overwriting the other's window. When one replica's
    # range of a machine's readings pushed out what the other's needs, the other's are late: dead-lettered, once.
    sidecar, port = pipeline.stack.start_app_beside_sidecar("features", pipeline.resources, **pipeline.app_env)
    machines, prefix = 2, f"replicas-{uuid.uuid4().hex[:6]}-"
    pipeline.feed(machines, prefix)
    expected = {f"{prefix}{slot}": machine_lifetime(slot) for slot in range(machines)}

    def counted_or_late() -> bool:
        late = pipeline.late_readings(expected)
        return all(
            pipeline.invoke("features", f"machines/{m}")["readings"] + len(late[m]) == n for m, n in expected.items()
        )

    wait_until(counted_or_late, "every reading in its machine's window or dead-lettered as late", timeout=240)
    print(
        "late readings per machine with two replicas:", {m: len(c) for m, c in pipeline.late_readings(expected).items()}
    )
    # Which outcomes the second replica's readings had depends on how the broker split them (early readings only
    # fill the window); that it took some is what shows the two replicas shared the machines' windows.
    taken = readings_taken(port)
    assert sum(taken.values()) > 0, f"the second replica took no reading: {taken}"
    print("readings the second replica took, by outcome:", taken)
    counts = {m: pipeline.invoke("alerts", f"machines/{m}")["predictions"] for m in expected}
    print("predictions applied per machine with two replicas:", counts, "of", {m: n - 29 for m, n in expected.items()})


def readings_taken(port: int) -> dict[str, float]:
    """The features app's own count of the readings it took, by outcome (its /metrics)."""
    served = text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    return {
        sample.labels["outcome"]: sample.value
        for family in served
        if family.name == "tandem_features_readings"
        for sample in family.samples
        if sample.name == "tandem_features_readings_total"
    }


def test_two_features_replicas_on_partitions_predict_every_reading_exactly_once(pipeline, failure_model):
    # Readings partitioned by machine (SENSORS_PARTITIONS / FEATURES_PARTITIONS), replica r of 2 reading the
    # partitions k with k % 2 == r: each machine's readings reach one replica, in order, so every window gets its
    # prediction and alerts opens exactly the expected episodes. The replicas share one app id (and so their
    # windows' keys), a sensors app of their own publishes to topics of their own.
    tag = uuid.uuid4().hex[:6]
    features_id, sensors_id, topic, count = f"features-{tag}", f"sensors-{tag}", f"readings-{tag}", 4
    resources = pipeline.stack.work / f"{features_id}-components"
    shutil.copytree(pipeline.resources, resources)
    for name in ("pubsub.yaml", "statestore.yaml"):
        with editing(resources / name) as component:
            component["scopes"] += [features_id, sensors_id]
    machines = 4
    # Machine names whose partitions give each replica some machines: what the test shows is their sharing.
    prefix = next(
        candidate
        for candidate in (f"partitioned-{tag}-{attempt}-" for attempt in range(100))
        if {partitions.partition(f"{candidate}{slot}", count) % 2 for slot in range(machines)} == {0, 1}
    )
    env = {
        **pipeline.app_env,
        "FEATURES_PARTITIONS": str(count),
        "FEATURES_REPLICAS": "2",
        "FEATURES_READINGS_TOPIC": topic,
    }
    ports = {}
    for replica in (0, 1):
        sidecar, ports[replica] = pipeline.stack.start_app_beside_sidecar(
            "features", resources, app_id=features_id, FEATURES_REPLICA=str(replica), **env
        )
        pipeline.sidecars[f"{features_id}-{replica}"] = sidecar
    pipeline.sidecars[sensors_id], _ = pipeline.stack.start_app_beside_sidecar(
        "sensors", resources, app_id=sensors_id, SENSORS_PARTITIONS=str(count), SENSORS_TOPIC=topic
    )

    pipeline.feed(machines, prefix, sensors=sensors_id)
    pipeline.wait_for_everything(machines, prefix, features=f"{features_id}-0")
    check_alerts(pipeline, machines, prefix, failure_model)

    for replica, port in ports.items():
        owned = [slot for slot in range(machines) if partitions.partition(f"{prefix}{slot}", count) % 2 == replica]
        taken = readings_taken(port)
        print(f"replica {replica}: machines {owned}, readings by outcome {taken}")
        # Every reading of its machines, none of the other's (a redelivery would count as a duplicate; each
        # reading's prediction was checked above, through alerts).
        assert taken.get("windowing", 0) + taken.get("predicted", 0) == sum(machine_lifetime(slot) for slot in owned)
        assert taken.get("conflict", 0) == 0, "no other replica wrote its machines' windows"
