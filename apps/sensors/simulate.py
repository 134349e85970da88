"""Feeds the sensors service with the seeded run-to-failure fleet the maintenance models were trained on.

    python -m sensors.simulate --machines 10 --rate 50 --seed 0 [--replace] [--cycles C] [--url URL | --mqtt HOST:PORT]

Each of the N machine slots (`machine-0` ...) runs a machine of tandem.fleet from new until it fails; with
--replace a failed machine is replaced by a new one in the same slot, so the stream goes on. Every tick posts one
reading of every running machine as one batch, R readings per second in all; timestamps advance one tick per cycle.
By default it posts through the sensors app's sidecar (DAPR_HTTP_PORT, 3504 unless set) with DAPR_API_TOKEN, and
sends a batch again until it is accepted when the service or its broker is briefly away. With --mqtt it is a fleet
of MQTT sensors instead, as on an edge device: each reading is one message on `tandem/readings/<machine>` at QoS 1,
and a tick waits until the broker acknowledged all of its readings (the client keeps and sends again what the broker
has not acknowledged while it is away).
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt

from tandem import fleet

# Machines the models never saw: recipes train on machines 0-159 and measure on 160-199 of their fleet.
FIRST_UNSEEN = 200


def ticks(
    machines: int, seed: int, replace: bool, first: int = FIRST_UNSEEN, prefix: str = "machine-", lives: int = 1
) -> Iterator[list[dict[str, Any]]]:
    """Per tick, the readings of every running machine (without timestamps); ends when all failed (never, with
    `replace`). Slot s is named `<prefix><s>` and runs fleet machines first + s, first + s + N, first + s + 2N, ...:
    `lives` of them one after the other, or without end with `replace`."""
    generations = [0] * machines
    running: dict[int, Iterator[fleet.Reading]] = {
        slot: fleet.readings(fleet.make_machine(seed, first + slot)) for slot in range(machines)
    }
    while running:
        batch = []
        for slot, machine_readings in list(running.items()):
            reading = next(machine_readings)
            batch.append(
                {
                    "machine": f"{prefix}{slot}",
                    "id": f"{prefix}{slot}:{reading.machine}:{reading.cycle}",
                    "values": reading.values,
                }
            )
            if reading.failed:
                del running[slot]
                if replace or generations[slot] + 1 < lives:
                    generations[slot] += 1
                    replacement = first + slot + generations[slot] * machines
                    running[slot] = fleet.readings(fleet.make_machine(seed, replacement))
        yield batch


def post(client: httpx.Client, url: str, batch: list[dict[str, Any]], patience: float = 120.0) -> None:
    """Posts one batch, again and again while the answer says "try later" (5xx, no connection); a 4xx is final."""
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            # orjson: a fleet's batches back to back are the simulator's own CPU, taken from the pipeline it feeds.
            body = orjson.dumps({"readings": batch})
            response = client.post(url, content=body, headers={"content-type": "application/json"})
            if response.status_code < 300:
                return
            if response.status_code < 500:
                raise SystemExit(f"sensors refused a batch: {response.status_code} {response.text}")
            problem = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as error:
            problem = f"{type(error).__name__}: {error}"
        if time.monotonic() > deadline:
            raise SystemExit(f"sensors did not accept a batch within {patience:g} s: {problem}")
        print(f"batch not accepted ({problem}); sending it again in {delay:.1f} s", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


class MqttSensors:
    """The fleet's sensors as MQTT clients of the device's broker (one connection stands in for all of them)."""

    def __init__(self, address: str, client_id: str) -> None:
        host, _, port = address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        # Broker acknowledgements by message id. (A message published while disconnected stays queued and is sent
        # on reconnection, but its MQTTMessageInfo keeps saying "not connected": count PUBACKs instead.)
        self.acknowledged: set[int] = set()
        self.client.on_publish = lambda _client, _userdata, mid, _reason, _properties: self.acknowledged.add(mid)
        self.client.connect_async(host, int(port))
        self.client.loop_start()

    def post(self, batch: list[dict[str, Any]]) -> None:
        """Publishes each reading on its machine's topic; returns once the broker acknowledged them all."""
        self.send([(f"tandem/readings/{reading['machine']}", json.dumps(reading)) for reading in batch])

    def send(self, messages: list[tuple[str, str]]) -> None:
        """Publishes (topic, payload) pairs at QoS 1; returns once the broker acknowledged them all."""
        sent = {self.client.publish(topic, payload, qos=1).mid for topic, payload in messages}
        # Queued while the broker is away, sent when it is back: wait as long as that takes.
        while not sent <= self.acknowledged:
            time.sleep(0.01)
        self.acknowledged -= sent

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sensors.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=10, help="machine slots running side by side")
    parser.add_argument("--rate", type=float, default=50.0, help="readings per second, all machines together")
    parser.add_argument("--seed", type=int, default=0, help="fleet seed (the models were trained on seed 0)")
    parser.add_argument("--replace", action="store_true", help="replace a failed machine with a new one")
    parser.add_argument("--cycles", type=int, default=0, help="stop after this many ticks (0: when all failed)")
    sidecar = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3504')}"
    parser.add_argument("--url", default=f"{sidecar}/v1.0/invoke/sensors/method/readings")
    parser.add_argument("--mqtt", metavar="HOST:PORT", help="publish to this MQTT broker instead of posting to --url")
    parser.add_argument("--prefix", default="machine-", help="machine names: <prefix><slot>")
    args = parser.parse_args()

    period = args.machines / args.rate  # seconds per tick: one reading of every machine
    headers = {"dapr-api-token": os.environ["DAPR_API_TOKEN"]} if os.environ.get("DAPR_API_TOKEN") else {}
    print(
        f"simulating {args.machines} machines of fleet seed {args.seed} (machines {FIRST_UNSEEN}+, unseen in "
        f"training){', replaced when they fail' if args.replace else ', each until it fails'}: "
        f"{args.rate:g} readings/s, one batch every {period:.2f} s to {args.mqtt or args.url}",
        flush=True,
    )
    started = time.time()
    sent, last_report = 0, time.monotonic()
    with httpx.Client(headers=headers, timeout=30) as client:
        sensors = MqttSensors(args.mqtt, f"simulator-{os.getpid()}") if args.mqtt else None
        for tick, batch in enumerate(ticks(args.machines, args.seed, args.replace, prefix=args.prefix)):
            if args.cycles and tick >= args.cycles:
                break
            due = started + tick * period
            time.sleep(max(0.0, due - time.time()))
            for reading in batch:
                reading["timestamp"] = due
            if sensors:
                sensors.post(batch)
            else:
                post(client, args.url, batch)
            sent += len(batch)
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                elapsed = time.time() - started
                print(f"{elapsed:6.0f} s: {sent} readings sent ({sent / elapsed:.0f}/s), tick {tick}", flush=True)
        if sensors:
            sensors.close()
    print(f"done: {sent} readings in {time.time() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
