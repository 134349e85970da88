"""A pooled async client for the local Dapr sidecar's HTTP API.

One instance per process, built at start-up: the connection pool is what keeps the per-call cost of
invocation, pub/sub and state to a round trip on an open socket. JSON goes both ways through orjson: the
pipeline's state documents and bulk calls are large, and the standard library's codec was most of features' CPU.
The calls go out through aiohttp (httpx-aiohttp's transport) behind httpx's interface: httpx's own connection
layer took half of a call's CPU (a call to a local HTTP server: 710 against 370 µs of the client's CPU), and the
pipeline's apps spend a fifth to a third of theirs in sidecar calls. Where httpx-aiohttp is not installed (an
edge device, dapr/edge/rootfs.sh), httpx's own transport does the same.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
import orjson

try:
    from httpx_aiohttp import AiohttpTransport as _AiohttpTransport
except ImportError:  # an edge device's services (dapr/edge/rootfs.sh): fewer packages start faster under qemu
    _AiohttpTransport = None  # type: ignore[assignment, misc]

from .settings import DaprSettings

T = TypeVar("T")
JSON = {"content-type": "application/json"}
# The content type of events that sidecars carry as they are: JSON that daprd takes for a string. daprd parses data
# of type `application/json` into its CloudEvent on publishing and writes it out again, field by field, on both
# sides; data of other types it carries as one string. Publishing a 140 KB event cost the sidecar 8.8 ms of CPU as
# `application/json` and 2.5 ms as this. Subscribers decode it with tandem.bulk.event_data.
OPAQUE_JSON = "application/vnd.tandem+json"
# What `Sidecar.update_state`'s change returns to leave the key as it is.
KEEP = object()


class SidecarError(Exception):
    """The sidecar answered with an error to `what` was asked; `status` and `body` are what it said."""

    def __init__(self, status: int, body: str, what: str):
        super().__init__(f"{what}: sidecar answered {status}: {body}")
        self.status = status
        self.body = body
        self.what = what


class ETagMismatch(SidecarError):
    """A state write or delete carried an ETag that is no longer current: read again and retry."""


class Sidecar:
    def __init__(
        self,
        url: str,
        api_token: str = "",
        timeout: float = 60.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        headers = {"dapr-api-token": api_token} if api_token else {}
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        # Plain http to the sidecar uses no certificates: loading the CA bundle anyway was a third of an edge
        # service's start-up under qemu-aarch64. An https endpoint (DAPR_HTTP_ENDPOINT) is verified as before.
        verify = url.startswith("https://")
        self.http = httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=timeout,
            limits=limits,
            verify=verify,
            transport=transport or _default_transport(verify, limits),
        )

    @classmethod
    def from_settings(cls, settings: DaprSettings | None = None) -> "Sidecar":
        settings = settings or DaprSettings()
        return cls(settings.sidecar_url, settings.dapr_api_token)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "Sidecar":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def invoke(
        self,
        app_id: str,
        method: str,
        *,
        http_method: str = "POST",
        content: bytes | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Calls `method` on `app_id` through the sidecar and returns the app's answer as it came.
        `method` may carry a query string; `timeout` overrides the client's for this call."""
        if json_body is not None:
            content, headers = orjson.dumps(json_body), {"content-type": "application/json", **(headers or {})}
        return await self.http.request(
            http_method,
            f"/v1.0/invoke/{app_id}/method/{method.lstrip('/')}",
            content=content,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    async def publish(
        self,
        pubsub: str,
        topic: str,
        data: Any,
        *,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Publishes `data` as JSON, of `content_type` (OPAQUE_JSON for large events); the sidecar wraps it in a
        CloudEvent."""
        response = await self.http.post(
            f"/v1.0/publish/{pubsub}/{topic}",
            content=orjson.dumps(data),
            headers={"content-type": content_type},
            params=_metadata_params(metadata),
        )
        _raise_for_status(response, f"publish to {pubsub}/{topic}")

    async def publish_bulk(
        self, pubsub: str, topic: str, events: list[Any], *, metadata: dict[str, str] | None = None
    ) -> None:
        """Publishes every event (as JSON, each in its own CloudEvent) in one call to the sidecar.

        Not transactional: when some entries fail, SidecarError's body lists them (`failedEntries`, by entry id,
        which is the event's index here) and the others may have been published. Send them all again: subscribers
        are idempotent.
        """
        entries = [
            {"entryId": str(index), "event": event, "contentType": "application/json"}
            for index, event in enumerate(events)
        ]
        response = await self.http.post(
            f"/v1.0-alpha1/publish/bulk/{pubsub}/{topic}",
            content=orjson.dumps(entries),
            headers=JSON,
            params=_metadata_params(metadata),
        )
        _raise_for_status(response, f"bulk publish of {len(events)} events to {pubsub}/{topic}")

    async def get_secret(self, store: str, name: str) -> dict[str, str]:
        """One secret of a secret store: a map of its keys to values."""
        response = await self.http.get(f"/v1.0/secrets/{store}/{name}")
        _raise_for_status(response, f"get secret {name} from {store}")
        return response.json()

    async def get_state(self, store: str, key: str) -> tuple[Any, str | None]:
        """Returns (value, etag); (None, None) when the key does not exist."""
        response = await self.http.get(f"/v1.0/state/{store}/{key}")
        _raise_for_status(response, f"get state {store}/{key}")
        if response.status_code == 204 or not response.content:
            return None, None
        return orjson.loads(response.content), response.headers.get("etag")

    async def get_bulk_state(self, store: str, keys: list[str]) -> dict[str, tuple[Any, str | None]]:
        """(value, etag) of every key in one call; (None, None) for a key that does not exist."""
        response = await self.http.post(f"/v1.0/state/{store}/bulk", content=orjson.dumps({"keys": keys}), headers=JSON)
        _raise_for_status(response, f"get {len(keys)} keys of state {store}")
        found = {item["key"]: (item.get("data"), item.get("etag")) for item in orjson.loads(response.content)}
        return {key: found.get(key, (None, None)) for key in keys}

    async def save_state(
        self, store: str, key: str, value: Any, *, etag: str | None = None, only_if_absent: bool = False
    ) -> None:
        """Saves one key. With an `etag`, the write succeeds only if the key is still at that version;
        with `only_if_absent`, only if the key does not exist yet (the store refuses it otherwise)."""
        item: dict[str, Any] = {"key": key, "value": value}
        if etag is not None:
            item["etag"] = etag
        if etag is not None or only_if_absent:
            item["options"] = {"concurrency": "first-write"}
        response = await self.http.post(f"/v1.0/state/{store}", content=orjson.dumps([item]), headers=JSON)
        _raise_for_status(response, f"save state {store}/{key}")

    async def transact_state(self, store: str, saves: Mapping[str, tuple[Any, str | None]]) -> None:
        """Saves every key, each to (value, etag): with an etag, only if the key is still at that version.
        Not all or nothing on every store: on Redis a key whose etag is stale is not written while the others are,
        and the call fails. Read the keys again to learn which were written."""
        operations = []
        for key, (value, etag) in saves.items():
            request: dict[str, Any] = {"key": key, "value": value}
            if etag is not None:
                request |= {"etag": etag, "options": {"concurrency": "first-write"}}
            operations.append({"operation": "upsert", "request": request})
        response = await self.http.post(
            f"/v1.0/state/{store}/transaction", content=orjson.dumps({"operations": operations}), headers=JSON
        )
        _raise_for_status(response, f"save {len(saves)} keys of state {store}")

    async def update_state(
        self, store: str, key: str, change: Callable[[Any], Awaitable[tuple[Any, T]]], *, attempts: int = 10
    ) -> T:
        """Read-modify-write of one key, safe against other writers: `change(value)` (None for a missing key)
        returns (what to save, or KEEP to save nothing; a result). When another writer saved first, the key is
        read again and `change` called again, so it must not assume it runs once. Returns the result."""
        for _ in range(attempts):
            value, etag = await self.get_state(store, key)
            new_value, result = await change(value)
            if new_value is KEEP:
                return result
            try:
                await self.save_state(store, key, new_value, etag=etag, only_if_absent=etag is None)
                return result
            except ETagMismatch:
                continue
            except SidecarError:
                # A lost race to create the key comes back as 500, not 409: if the key exists now, start again.
                if etag is None and (await self.get_state(store, key))[1] is not None:
                    continue
                raise
        raise ETagMismatch(409, f"{attempts} writers in a row saved first", f"update state {store}/{key}")

    async def update_bulk_state(
        self,
        store: str,
        keys: list[str],
        change: Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], T]]],
        *,
        attempts: int = 10,
    ) -> T:
        """Read-modify-write of many keys in a few calls, safe against other writers: one bulk read, then
        `change(values)` ({key: value, None for a missing key}) returns ({key: what to save} for the keys that
        changed, a result); a missing key is created only if still absent, the others are saved in one
        transaction with the ETags read. When another writer saved a key first, all are read again and `change`
        called again. On Redis the transaction's other keys were written meanwhile, so `change` must skip what a
        value already holds (as an idempotent consumer does anyway). Returns the result."""
        for _ in range(attempts):
            stored = await self.get_bulk_state(store, keys)
            saves, result = await change({key: value for key, (value, _) in stored.items()})
            try:
                for key, value in saves.items():
                    if stored[key][1] is None:
                        await self.save_state(store, key, value, only_if_absent=True)
                existing = {key: (value, stored[key][1]) for key, value in saves.items() if stored[key][1] is not None}
                if existing:
                    await self.transact_state(store, existing)
                return result
            except SidecarError:
                # A stale ETag (409, or a failed transaction) means read again. If the store itself is down, the
                # next read fails and so does the call.
                continue
        raise ETagMismatch(409, f"{attempts} writers in a row saved first", f"update {len(keys)} keys of {store}")

    async def delete_state(self, store: str, key: str, *, etag: str | None = None) -> None:
        headers = {"If-Match": etag} if etag is not None else None
        response = await self.http.delete(f"/v1.0/state/{store}/{key}", headers=headers)
        _raise_for_status(response, f"delete state {store}/{key}")


def _default_transport(verify: bool, limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """aiohttp's, where installed; None leaves httpx its own."""
    return None if _AiohttpTransport is None else _AiohttpTransport(verify=verify, limits=limits)


def _metadata_params(metadata: dict[str, str] | None) -> dict[str, str] | None:
    if not metadata:
        return None
    return {f"metadata.{name}": value for name, value in metadata.items()}


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.status_code < 300:
        return
    if response.status_code == 409:
        raise ETagMismatch(response.status_code, response.text, what)
    raise SidecarError(response.status_code, response.text, what)
