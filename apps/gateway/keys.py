"""Client API keys, read from a Dapr secret store: one secret whose entries are client name -> key."""

import hashlib
import logging

import httpx

from tandem.sidecar import Sidecar, SidecarError

log = logging.getLogger(__name__)


def _digest(key: str) -> bytes:
    # Keys are looked up by digest so that a lookup's timing says nothing about a key's characters.
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, sidecar: Sidecar, store: str, secret: str):
        self.sidecar = sidecar
        self.store = store
        self.secret = secret
        self.clients: dict[bytes, str] = {}
        self.error = "API keys not read yet"

    async def refresh(self) -> None:
        """Reads the keys again; on failure the keys read before stay in force."""
        try:
            entries = await self.sidecar.get_secret(self.store, self.secret)
        except (SidecarError, httpx.TransportError) as error:
            self.error = f"could not read secret {self.secret!r} from secret store {self.store!r}: {error}"
            log.warning(self.error)
            return
        self.clients = {_digest(key): client for client, key in entries.items() if key}
        self.error = "" if self.clients else f"secret {self.secret!r} in {self.store!r} holds no API keys"

    def client(self, key: str) -> str | None:
        """The client a key belongs to, or None."""
        return self.clients.get(_digest(key))
