"""The edge device's stack on real parts (dapr/edge/stack.py): Mosquitto, Redis, the Go edge agent and sensors,
features, regression and alerts, each beside the trimmed edge daprd, with app ids and ports of this test's own.

Simulated MQTT sensors publish readings of the seeded fleet at QoS 1; the checks are what a user of the device
would check: every reading counted exactly once by features, every prediction exactly once by alerts, through
outages of each part in turn and a kill -9 of every process. EDGE_ARCH=arm64 runs the same processes inside the
arm64 root file system under qemu (`make edge-test EDGE_ARCH=arm64`).
"""

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sensors.simulate import MqttSensors, ticks
from tandem.fleet import WINDOW

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dapr" / "edge"))
from stack import EdgeStack  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.edge]
ARCH = os.environ.get("EDGE_ARCH", "amd64")
# An outage's readings: 100 machines of 10 readings each. Fewer than a window each, so features counts every one
# without calling the models (the first test covers predictions and alerts): what is measured is delivery.
MACHINES, TICKS = 100, 10
# Everything published during an outage is in the device's pub/sub within this time of the recovery, under qemu
# too (2.5-16.6 s measured there).
RECOVERY_SECONDS = 30.0
# How long features may take to work through a backlog (a state read and write per reading).
PROCESSING_SECONDS = 300.0 if ARCH == "amd64" else 1200.0
# Whole machine lives in the first test (636 readings).
LIFE_MACHINES = 3


@pytest.fixture(scope="module")
def edge(request) -> Iterator[EdgeStack]:
    for binary in ("daprd", "edge-agent"):
        if not (ROOT / ".runtime" / "edge" / ARCH / "bin" / binary).exists():
            pytest.fail(f".runtime/edge/{ARCH}/bin/{binary} is missing: make edge-runtime EDGE_ARCH={ARCH}")
    # Not under pytest's own temporary folder: Mosquitto drops to its own user, which must reach its data.
    work = Path(tempfile.mkdtemp(prefix="tandem-edge-"))
    work.chmod(0o755)
    stack = EdgeStack(work, arch=ARCH, suffix=f"-{uuid.uuid4().hex[:6]}")
    try:
        seconds = stack.start()
        print(f"edge stack ({ARCH}) healthy in {seconds:.1f} s")
        yield stack
    finally:
        stack.close()
        if request.session.testsfailed:
            print(f"edge stack logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


class Device:
    """Calls into the edge stack the way its user does: through the sidecars, with the Dapr API token."""

    def __init__(self, stack: EdgeStack):
        self.stack = stack
        self.http = httpx.Client(headers={"dapr-api-token": stack.dapr_api_token}, timeout=30)
        self.metrics = httpx.Client(timeout=30)  # one client: the waits read metrics ten times a second

    def invoke(self, service: str, method: str):
        url = f"{self.stack.sidecar_url(service)}/v1.0/invoke/{self.stack.app_id(service)}/method/{method}"
        response = self.http.get(url)
        assert response.status_code == 200, response.text
        return response.json()

    def counted(self, prefix: str, machines: int) -> tuple[list[int], list[int]]:
        """Per machine: distinct readings features counted, distinct predictions alerts applied."""
        names = [f"{prefix}{slot}" for slot in range(machines)]
        readings = [self.invoke("features", f"machines/{name}")["readings"] for name in names]
        predictions = [self.invoke("alerts", f"machines/{name}")["predictions"] for name in names]
        return readings, predictions

    def took_readings(self, prefix: str, machines: int) -> bool:
        """Whether features counted any reading of these machines; False while its sidecar does not call it yet
        (after a restart, until the sidecar's app health check, every 5 s, passes again)."""
        for slot in range(machines):
            url = f"{self.stack.sidecar_url('features')}/v1.0/invoke/{self.stack.app_id('features')}/method/machines"
            response = self.http.get(f"{url}/{prefix}{slot}")
            if response.status_code != 200:
                return False
            if response.json()["readings"]:
                return True
        return False

    def wait_for(self, prefix: str, machines: int, ticks: int, timeout: float) -> float:
        """Waits until every reading and prediction of these machines was counted; returns the seconds it took."""
        started = time.monotonic()
        want = ([ticks] * machines, [max(0, ticks - WINDOW + 1)] * machines)
        while (got := self.counted(prefix, machines)) != want:
            assert all(g <= w for g, w in zip(got[0] + got[1], want[0] + want[1], strict=True)), f"counted twice: {got}"
            if time.monotonic() - started > timeout:
                pytest.fail(f"after {timeout:g} s, readings {got[0]} and predictions {got[1]}, want {want}")
            time.sleep(0.25)
        return time.monotonic() - started

    def metric(self, process: str, name: str, **labels: str) -> float:
        port = self.stack.ports[process].app
        text = self.metrics.get(f"http://127.0.0.1:{port}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def forwarded(self) -> float:
        return self.metric("edge-agent", "edge_agent_events_forwarded_total", topic="readings")

    def outbox_rows(self) -> float:
        return self.metric("edge-agent", "edge_agent_outbox_rows")

    def duplicates(self) -> float:
        return self.metric("features", "tandem_features_readings_total", outcome="duplicate")


def publish(stack: EdgeStack, prefix: str, machines: int = MACHINES, count: int = TICKS, wait: bool = True):
    """Publishes up to `count` readings of each of `machines` fresh machines as MQTT sensors and returns how many of
    each; with wait=False, in a thread (the sensors' client keeps what the broker has not acknowledged and sends it
    again once it can)."""
    sent = [0] * machines

    def run() -> None:
        sensors = MqttSensors(f"127.0.0.1:{stack.mqtt_port}", f"sensors-{uuid.uuid4().hex[:8]}")
        try:
            for tick, batch in enumerate(ticks(machines, 0, replace=False, prefix=prefix)):
                if tick == count:
                    break
                for reading in batch:
                    reading["timestamp"] = 1_700_000_000 + tick
                    sent[int(reading["machine"].removeprefix(prefix))] += 1
                sensors.post(batch)
        finally:
            sensors.close()

    if wait:
        run()
        return sent
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_readings_of_mqtt_sensors_reach_alerts(edge):
    """Whole machine lives from MQTT sensors: every reading reaches features once, every prediction alerts once,
    and machines that wear out raise alerts; a message that is not a reading ends in alerts' dead letters."""
    device = Device(edge)
    prefix = f"life-{uuid.uuid4().hex[:4]}-"
    readings = publish(edge, prefix, machines=LIFE_MACHINES, count=10_000)  # until every machine failed
    want = (readings, [count - WINDOW + 1 for count in readings])
    started = time.monotonic()
    while (got := device.counted(prefix, LIFE_MACHINES)) != want:
        assert time.monotonic() - started < PROCESSING_SECONDS, f"readings and predictions counted {got}, want {want}"
        time.sleep(0.5)
    alerts = device.invoke("alerts", "alerts")
    mine = [alert for alert in alerts if alert["machine"].startswith(prefix)]
    assert mine, f"no alert for machines that ran until they failed: {alerts}"

    bad = MqttSensors(f"127.0.0.1:{edge.mqtt_port}", f"bad-{uuid.uuid4().hex[:6]}")
    bad.send([(f"tandem/readings/{prefix}x", '{"machine": "x", "values": {}}')])
    bad.close()
    started = time.monotonic()
    while not any(prefix in str(letter["data"]) for letter in device.invoke("alerts", "dead-letters")):
        assert time.monotonic() - started < RECOVERY_SECONDS, "the bad message never reached the dead letters"
        time.sleep(0.25)


@pytest.mark.parametrize("down", ["daprd-edge-agent", "edge-agent", "mosquitto", "features"])
def test_a_thousand_readings_sent_while_a_part_is_down_all_arrive_after_it_is_back(edge, down):
    """1,000 readings published while `down` is stopped (gracefully: the broker saves its sessions) are in the
    device's pub/sub within RECOVERY_SECONDS of its restart (the agent's outbox drained; for features, it took
    readings again), and every one is counted exactly once by features; duplicates (redeliveries) are counted and
    change nothing."""
    device = Device(edge)
    prefix = f"{down.replace('-', '')}-{uuid.uuid4().hex[:4]}-"
    # A restarted process counts from 0 again.
    duplicates = 0 if down == "features" else device.duplicates()
    forwarded = 0 if down == "edge-agent" else device.forwarded()
    edge.stop(down)
    if down == "mosquitto":  # with the broker away the sensors keep their readings and send them once it is back
        sender = publish(edge, prefix, wait=False)
        time.sleep(2)
    else:
        publish(edge, prefix)
    edge.processes[down].start()
    edge.processes[down].wait_healthy()
    back = time.monotonic()
    if down == "mosquitto":
        sender.join(RECOVERY_SECONDS)
    if down == "features":
        while not device.took_readings(prefix, MACHINES):
            assert time.monotonic() - back < RECOVERY_SECONDS, "features took no reading after its restart"
            time.sleep(0.1)
    else:
        while device.forwarded() - forwarded < MACHINES * TICKS or device.outbox_rows():
            assert time.monotonic() - back < RECOVERY_SECONDS, (
                f"{device.forwarded() - forwarded:g} of {MACHINES * TICKS} forwarded, {device.outbox_rows():g} in "
                f"the outbox {RECOVERY_SECONDS:g} s after {down} was back"
            )
            time.sleep(0.1)
    in_pubsub = time.monotonic() - back
    # Then features works through them at its own pace (a state read and write per reading).
    seconds = device.wait_for(prefix, MACHINES, TICKS, timeout=PROCESSING_SECONDS)
    print(
        f"{down}: {MACHINES * TICKS} readings in the pub/sub {in_pubsub:.1f} s after it was back, all counted once "
        f"by features {seconds + in_pubsub:.1f} s after; {device.duplicates() - duplicates:g} duplicates"
    )


def test_kill_9_of_every_process_and_a_restart_lose_nothing_acknowledged(edge):
    """Mid-stream, every process of the device is killed at once (SIGKILL) and started again: every reading the
    sensors got a PUBACK for, and every one they kept meanwhile, is counted exactly once."""
    device = Device(edge)
    prefix = f"kill-{uuid.uuid4().hex[:4]}-"
    sender = publish(edge, prefix, wait=False)
    started = time.monotonic()
    while device.metric("edge-agent", "edge_agent_messages_received_total") < 300:
        assert time.monotonic() - started < RECOVERY_SECONDS and sender.is_alive(), "the agent took no readings"
        time.sleep(0.05)
    for process in edge.processes.values():
        process.stop(signal.SIGKILL)
    edge.start_all()
    sender.join(60)
    # A message a killed sidecar had taken from Redis is delivered again once processingTimeout (60 s) passed.
    seconds = device.wait_for(prefix, MACHINES, TICKS, timeout=PROCESSING_SECONDS)
    print(f"kill -9: all readings counted {seconds:.1f} s after the restart")
