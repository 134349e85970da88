"""Feeds the sensors service with the seeded run-to-failure fleet the maintenance models were trained on.

    python -m sensors.simulate --machines 10 --rate 50 --seed 0 [--replace] [--cycles C] [--url URL]

Each of the N machine slots (`machine-0` ...) runs a machine of tandem.fleet from new until it fails; with
--replace a failed machine is replaced by a new one in the same slot, so the stream goes on. Every tick posts one
reading of every running machine as one batch, R readings per second in all; timestamps advance one tick per cycle.
By default it posts through the sensors app's sidecar (DAPR_HTTP_PORT, 3504 unless set) with DAPR_API_TOKEN, and
sends a batch again until it is accepted when the service or its broker is briefly away.
"""

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from tandem import fleet

# Machines the models never saw: recipes train on machines 0-159 and measure on 160-199 of their fleet.
FIRST_UNSEEN = 200


def ticks(
    machines: int, seed: int, replace: bool, first: int = FIRST_UNSEEN, prefix: str = "machine-"
) -> Iterator[list[dict[str, Any]]]:
    """Per tick, the readings of every running machine (without timestamps); ends when all failed (never, with
    `replace`). Slot s is named `<prefix><s>` and runs fleet machines first + s, first + s + N, first + s + 2N, ..."""
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
                if replace:
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
            response = client.post(url, json={"readings": batch})
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sensors.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=10, help="machine slots running side by side")
    parser.add_argument("--rate", type=float, default=50.0, help="readings per second, all machines together")
    parser.add_argument("--seed", type=int, default=0, help="fleet seed (the models were trained on seed 0)")
    parser.add_argument("--replace", action="store_true", help="replace a failed machine with a new one")
    parser.add_argument("--cycles", type=int, default=0, help="stop after this many ticks (0: when all failed)")
    sidecar = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3504')}"
    parser.add_argument("--url", default=f"{sidecar}/v1.0/invoke/sensors/method/readings")
    args = parser.parse_args()

    period = args.machines / args.rate  # seconds per tick: one reading of every machine
    headers = {"dapr-api-token": os.environ["DAPR_API_TOKEN"]} if os.environ.get("DAPR_API_TOKEN") else {}
    print(
        f"simulating {args.machines} machines of fleet seed {args.seed} (machines {FIRST_UNSEEN}+, unseen in "
        f"training){', replaced when they fail' if args.replace else ', each until it fails'}: "
        f"{args.rate:g} readings/s, one batch every {period:.2f} s to {args.url}",
        flush=True,
    )
    started = time.time()
    sent, last_report = 0, time.monotonic()
    with httpx.Client(headers=headers, timeout=30) as client:
        for tick, batch in enumerate(ticks(args.machines, args.seed, args.replace)):
            if args.cycles and tick >= args.cycles:
                break
            due = started + tick * period
            time.sleep(max(0.0, due - time.time()))
            for reading in batch:
                reading["timestamp"] = due
            post(client, args.url, batch)
            sent += len(batch)
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                elapsed = time.time() - started
                print(f"{elapsed:6.0f} s: {sent} readings sent ({sent / elapsed:.0f}/s), tick {tick}", flush=True)
    print(f"done: {sent} readings in {time.time() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
