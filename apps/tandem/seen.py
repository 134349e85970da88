"""The newest ids an idempotent consumer has taken, kept small for the state store: 8-byte digests, newest last,
stored as one base64 string (a third of the ids themselves for uuids, and the same size however long the ids)."""

import base64
import hashlib

DIGEST = 8  # bytes: a false "seen" takes about 2**64 / capacity ids


class SeenIds:
    def __init__(self, capacity: int, digests: list[bytes] | None = None):
        self.capacity = capacity
        self.digests = digests or []

    @classmethod
    def from_state(cls, capacity: int, state: str | list[str] | None) -> "SeenIds":
        """From `to_state()`, or from a list of the ids themselves (the earlier layout)."""
        if state is None:
            return cls(capacity)
        if isinstance(state, list):
            return cls(capacity, [_digest(id_) for id_ in state][-capacity:])
        packed = base64.b64decode(state)
        return cls(capacity, [packed[start : start + DIGEST] for start in range(0, len(packed), DIGEST)])

    def to_state(self) -> str:
        return base64.b64encode(b"".join(self.digests)).decode("ascii")

    def __contains__(self, id_: str) -> bool:
        return _digest(id_) in self.digests

    def add(self, id_: str) -> None:
        self.digests.append(_digest(id_))
        del self.digests[: -self.capacity]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeenIds) and (self.capacity, self.digests) == (other.capacity, other.digests)


def _digest(id_: str) -> bytes:
    return hashlib.blake2b(id_.encode(), digest_size=DIGEST).digest()
