"""A subscriber app for the pub/sub test: records the CloudEvents its sidecar delivers."""

from typing import Any

from dapr.ext.fastapi import DaprApp
from fastapi import Body

from tandem.server import make_base_app
from tandem.settings import AppSettings

app = make_base_app("listener", AppSettings())
received: list[dict[str, Any]] = []


async def on_greeting(event: dict[str, Any] = Body()) -> dict[str, str]:
    received.append(event)
    return {"status": "SUCCESS"}


DaprApp(app).subscribe(pubsub="pubsub", topic="greetings")(on_greeting)


@app.get("/received")
async def list_received() -> list[dict[str, Any]]:
    return received
