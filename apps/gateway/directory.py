"""Which service owns which model: each service's repository index, read through the sidecars."""

import asyncio
import logging
import math
import time
from typing import Any

import httpx

from tandem.sidecar import Sidecar

log = logging.getLogger(__name__)

# An unknown model triggers a fresh read of the indexes, but not more often than this: a client asking for
# models that do not exist must not turn every request into a round of index reads.
UNKNOWN_MODEL_REFRESH_SECONDS = 1.0


class ModelDirectory:
    def __init__(self, sidecar: Sidecar, services: list[str], timeout: float):
        self.sidecar = sidecar
        self.timeout = timeout
        # Index entries ({"name", "version", "state"}) per service, as last read; kept when a read fails, so a
        # model of a service that is down answers 503 (service unavailable) rather than 404.
        self.models: dict[str, list[dict[str, Any]]] = {service: [] for service in services}
        self.errors: dict[str, str] = {service: "index not read yet" for service in services}
        self.owners: dict[str, str] = {}
        self.refreshed_at = -math.inf
        self.reading: asyncio.Future[None] | None = None  # the read of every index under way, if any

    def add(self, service: str) -> bool:
        """Routes to `service` from now on (a model server that registered itself); False if it was known."""
        if service in self.models:
            return False
        self.models[service] = []
        self.errors[service] = "index not read yet"
        return True

    async def refresh(self, service: str | None = None) -> None:
        """Reads the repository index of `service` (or of every service) again."""
        if service in self.models:
            await self._read_indexes([service])
            return
        # Callers that come while every index is being read wait for that read instead of starting another.
        if self.reading is None or self.reading.done():
            self.refreshed_at = time.monotonic()
            self.reading = asyncio.ensure_future(self._read_indexes(list(self.models)))
        await asyncio.shield(self.reading)

    async def _read_indexes(self, services: list[str]) -> None:
        await asyncio.gather(*(self._read_index(name) for name in services))
        owners: dict[str, str] = {}
        for name, entries in self.models.items():
            for entry in entries:
                if owners.setdefault(entry["name"], name) != name:
                    log.warning(
                        "model %s is in both %s and %s; routing to %s",
                        entry["name"],
                        owners[entry["name"]],
                        name,
                        owners[entry["name"]],
                    )
        self.owners = owners

    async def _read_index(self, service: str) -> None:
        try:
            response = await self.sidecar.invoke(
                service,
                "v2/repository/index",
                content=b"{}",
                headers={"content-type": "application/json"},
                timeout=self.timeout,
            )
        except httpx.TransportError as error:
            self.errors[service] = f"the sidecar could not be reached: {type(error).__name__}"
            return
        if response.status_code != 200:
            self.errors[service] = f"repository index answered {response.status_code}: {response.text[:300]}"
            return
        self.models[service] = response.json()
        self.errors[service] = ""

    async def owner(self, model: str) -> str | None:
        """The service that holds `model`, reading the indexes again if it is unknown (a new model)."""
        reading_now = self.reading is not None and not self.reading.done()
        stale = time.monotonic() - self.refreshed_at > UNKNOWN_MODEL_REFRESH_SECONDS
        if model not in self.owners and (reading_now or stale):
            await self.refresh()  # joins the read under way, if there is one
        return self.owners.get(model)

    def listing(self) -> list[dict[str, Any]]:
        return [{**entry, "service": service} for service, entries in self.models.items() for entry in entries]
