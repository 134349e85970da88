"""The sidecar's channel to its app, while the app is down.

daprd 1.18.2 as released shares one handler between concurrent calls to its app (the app HTTP pipeline keeps the
handler of the last call that started), so when calls that start at the same moment fail on the wire, a failure
can be reported to the wrong call and the call whose handler never ran comes back as an empty 200. For pub/sub
that empty 200 is an acknowledgement: the broker drops a message the app never saw. Deliveries that are retried
together (a constant backoff, many workers) start at the same moment, which is how the pipeline lost readings
when the features app was killed. dapr/runtime/patches mends the pipeline; this checks the daprd we build.
"""

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tandem.sidecar import Sidecar

from .stack import Stack, editing, free_port, retry_deliveries, set_metadata, wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
EVENTS = 300
DOWN_SECONDS = 6.0


def retry_deliveries_together(resources: Path) -> None:
    """Many delivery workers whose retries fire at the same moments: every 200 ms, for a minute."""
    with editing(resources / "pubsub.yaml") as pubsub:
        set_metadata(pubsub, concurrency="100")
    retry_deliveries(resources, every="200ms", times=300)


def test_events_delivered_while_the_subscriber_is_down_all_reach_it_once_it_is_back(stack: Stack):
    resources = stack.components({"pubsub": ["publisher", "listener"]})
    retry_deliveries_together(resources)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "listener:app", "--app-dir", str(HERE), "--port", str(port)]
    app = stack.start_app("listener", command, port)
    listener = stack.start_sidecar(stack.app_id("listener"), resources, port)
    publisher = stack.start_sidecar(stack.app_id("publisher"), resources)
    app.stop(signal.SIGKILL)

    run = uuid.uuid4().hex

    async def publish() -> None:
        async with Sidecar(publisher.url, stack.dapr_api_token) as sidecar:
            await sidecar.publish_bulk("pubsub", "greetings", [{"run": run, "n": n} for n in range(EVENTS)])

    asyncio.run(publish())
    time.sleep(DOWN_SECONDS)  # every delivery worker fails, again and again, at the same moments
    app.restart()

    url = f"{listener.url}/v1.0/invoke/{listener.app_id}/method/received"
    headers = {"dapr-api-token": stack.dapr_api_token}

    def received() -> set[int]:
        response = httpx.get(url, headers=headers)
        if response.status_code != 200:
            return set()
        return {event["data"]["n"] for event in response.json() if event["data"].get("run") == run}

    try:
        wait_until(lambda: len(received()) == EVENTS, f"all {EVENTS} events received", timeout=30)
    except TimeoutError:
        missing = sorted(set(range(EVENTS)) - received())
        pytest.fail(f"{len(missing)} of {EVENTS} events never reached the subscriber: {missing[:20]}")
