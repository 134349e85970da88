"""Pub/sub through Redis: an event published by one sidecar reaches an app subscribed through another."""

import asyncio
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tandem.sidecar import Sidecar

from .stack import Stack, free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


def test_an_event_published_by_one_app_reaches_a_subscriber_of_another(stack: Stack):
    resources = stack.components({"pubsub": ["publisher", "listener"]})
    listener_port = free_port()
    stack.start_app(
        "listener",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "listener:app",
            "--app-dir",
            str(HERE),
            "--port",
            str(listener_port),
        ],
        listener_port,
    )
    listener = stack.start_sidecar(stack.app_id("listener"), resources, listener_port)
    publisher = stack.start_sidecar(stack.app_id("publisher"), resources)

    greetings = [{"greeting": "hello", "n": n, "run": uuid.uuid4().hex} for n in range(3)]

    async def publish():
        async with Sidecar(publisher.url, stack.dapr_api_token) as sidecar:
            for greeting in greetings:
                await sidecar.publish("pubsub", "greetings", greeting)

    asyncio.run(publish())

    received: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(received) < len(greetings):
        response = httpx.get(
            f"{listener.url}/v1.0/invoke/{listener.app_id}/method/received",
            headers={"dapr-api-token": stack.dapr_api_token},
        )
        assert response.status_code == 200, response.text
        received = response.json()
        time.sleep(0.2)

    assert sorted((event["data"] for event in received), key=lambda data: data["n"]) == greetings
    for event in received:
        assert (event["topic"], event["pubsubname"], event["source"]) == ("greetings", "pubsub", publisher.app_id)
