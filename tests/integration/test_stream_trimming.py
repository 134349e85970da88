"""Trimming the pub/sub streams (k8s/base/trim-streams.sh beside Redis, as in `make run`): what every subscriber has
acknowledged goes, nothing unread or unacknowledged does.

Cases tried: a subscriber's sidecar stopped while messages are published and the trimmer runs, then started again;
a group with entries read but not acknowledged (pending); two groups at different places in one stream; a stream no
group reads yet; a key that is not a stream."""

import asyncio
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tandem.sidecar import Sidecar

from .stack import Process, Stack, free_port, redis_command, wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


def redis(stack: Stack, *command: str) -> list[str]:
    return redis_command(stack.redis_port, *command)


def stream_ids(stack: Stack, stream: str) -> list[str]:
    """The ids of the entries `stream` holds, oldest first."""
    return [line for line in redis(stack, "XRANGE", stream, "-", "+") if line[:1].isdigit() and "-" in line]


def passes(trimmer: Process) -> int:
    return trimmer.log_file.read_text().count(" removed ")


def wait_for_passes(trimmer: Process, count: int) -> None:
    """Until the trimmer has made `count` more passes (each one after the moment of the call)."""
    target = passes(trimmer) + count
    wait_until(lambda: passes(trimmer) >= target, f"{count} trimming passes", process=trimmer)


@pytest.fixture(scope="module")
def trimmer(stack: Stack) -> Process:
    return stack.start_stream_trimmer(every=0.5)


def test_a_subscriber_down_while_messages_are_published_and_trimmed_gets_every_one_of_them(stack, trimmer):
    topic = "greetings"  # what listener.py subscribes to; this module's Redis is its own
    resources = stack.components({"pubsub": ["publisher", "listener"]})
    listener_port = free_port()
    command = [sys.executable, "-m", "uvicorn", "listener:app", "--app-dir", str(HERE), "--port", str(listener_port)]
    stack.start_app("listener", command, listener_port)
    listener = stack.start_sidecar(stack.app_id("listener"), resources, listener_port)
    publisher = stack.start_sidecar(stack.app_id("publisher"), resources)
    token = {"dapr-api-token": stack.dapr_api_token}

    def received() -> list[int]:
        url = f"{listener.url}/v1.0/invoke/{listener.app_id}/method/received"
        return sorted(event["data"]["n"] for event in httpx.get(url, headers=token).json())

    def publish(numbers: range) -> None:
        async def send() -> None:
            async with Sidecar(publisher.url, stack.dapr_api_token) as sidecar:
                for n in numbers:
                    await sidecar.publish("pubsub", topic, {"n": n})

        asyncio.run(send())

    publish(range(5))
    wait_until(lambda: received() == list(range(5)), "the first five delivered")
    # Acknowledged by the only group: trimmed, all but the last entry read (XTRIM MINID keeps that id itself).
    wait_for_passes(trimmer, 2)
    assert len(stream_ids(stack, topic)) == 1

    listener.process.stop()
    publish(range(5, 12))
    wait_for_passes(trimmer, 3)
    # Nobody has read these: every one is still there.
    assert len(stream_ids(stack, topic)) == 1 + 7

    listener.process.restart()
    wait_until(lambda: httpx.get(f"{listener.url}/v1.0/healthz").status_code == 204, "listener's sidecar back")
    wait_until(lambda: received() == list(range(12)), "all twelve delivered", timeout=60)
    wait_for_passes(trimmer, 2)
    assert len(stream_ids(stack, topic)) == 1


def test_trimming_keeps_what_any_group_has_not_read_or_not_acknowledged(stack, trimmer):
    stream, waiting, other = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("orders", "waiting", "other"))
    ids = [redis(stack, "XADD", stream, "*", "n", str(n))[0] for n in range(10)]
    redis(stack, "XGROUP", "CREATE", stream, "fast", "0")
    redis(stack, "XGROUP", "CREATE", stream, "slow", "0")
    redis(stack, "XREADGROUP", "GROUP", "fast", "c", "STREAMS", stream, ">")
    redis(stack, "XACK", stream, "fast", *ids)
    # slow read six, acknowledged all but the third: the third is pending, the last four unread.
    redis(stack, "XREADGROUP", "GROUP", "slow", "c", "COUNT", "6", "STREAMS", stream, ">")
    redis(stack, "XACK", stream, "slow", *ids[:2], *ids[3:6])
    redis(stack, "XADD", waiting, "*", "n", "0")  # no group yet: its first subscriber will read it from the start
    redis(stack, "SET", other, "a value")

    wait_for_passes(trimmer, 2)
    assert stream_ids(stack, stream) == ids[2:]
    assert len(stream_ids(stack, waiting)) == 1
    assert redis(stack, "GET", other) == ["a value"]

    # The pending one acknowledged: slow still has four to read after the sixth.
    redis(stack, "XACK", stream, "slow", ids[2])
    wait_for_passes(trimmer, 2)
    assert stream_ids(stack, stream) == ids[5:]
