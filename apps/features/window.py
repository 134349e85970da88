"""One machine's rolling window of readings, as kept in the state store between events.

Readings are kept in timestamp order, so one that arrives late (a redelivery, a retry) still lands where it belongs;
each reading's prediction is computed from the WINDOW readings ending at it, with tandem.fleet.window_features, the
computation the models were trained on, once all of them are there: a late reading can complete the window of a
later one that came first.
"""

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tandem.fleet import CHANNELS, WINDOW, window_features

# Readings kept beyond one window, so that a reading up to this many places late still finds its full window.
SLACK = 10
# Reading ids remembered for idempotency: a redelivery older than this many readings would count twice.
SEEN = 256


@dataclass
class Window:
    # (seconds since the epoch, reading id, values in CHANNELS order), oldest first
    readings: list[tuple[float, str, list[float]]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # newest last
    count: int = 0  # distinct readings ever added
    predicted: list[str] = field(default_factory=list)  # ids of the kept readings whose prediction was published

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "Window":
        if state is None:
            return cls()
        readings = [(float(ts), str(id_), list(values)) for ts, id_, values in state["readings"]]
        window = cls(readings, list(state["seen"]), int(state["count"]))
        # A window saved before predictions were tracked: every reading with a full window had its prediction.
        window.predicted = list(state["predicted"]) if "predicted" in state else window.due()
        return window

    def to_state(self) -> dict[str, Any]:
        readings = [list(reading) for reading in self.readings]
        return {"readings": readings, "seen": self.seen, "count": self.count, "predicted": self.predicted}

    def add(self, reading_id: str, timestamp: float, values: dict[str, float]) -> bool:
        """Adds a reading in timestamp order; False (and no change) if this reading id was added before."""
        if reading_id in self.seen:
            return False
        bisect.insort(self.readings, (timestamp, reading_id, [values[channel] for channel in CHANNELS]))
        del self.readings[: -(WINDOW + SLACK)]
        kept = {id_ for _, id_, _ in self.readings}
        self.predicted = [id_ for id_ in self.predicted if id_ in kept]
        self.seen.append(reading_id)
        del self.seen[:-SEEN]
        self.count += 1
        return True

    def due(self) -> list[str]:
        """Ids of the kept readings that have their full window but no prediction yet, oldest first: the reading
        just added, and a later one that came before it (readings arrive out of order: a bulk publish is stored in
        any order, deliveries run in parallel) and whose window it completed."""
        return [
            id_ for index, (_, id_, _) in enumerate(self.readings) if index + 1 >= WINDOW and id_ not in self.predicted
        ]

    def features(self, reading_id: str) -> tuple[np.ndarray, list[str]] | None:
        """The feature vector of the WINDOW readings ending at `reading_id`, and their ids; None while there are
        fewer than WINDOW of them (or the reading is too late to have its window here any more)."""
        position = next((index for index, reading in enumerate(self.readings) if reading[1] == reading_id), None)
        if position is None or position + 1 < WINDOW:
            return None
        window = self.readings[position + 1 - WINDOW : position + 1]
        vector = window_features(dict(zip(CHANNELS, values, strict=True)) for _, _, values in window)
        assert vector is not None, "a full window always has features"
        return vector, [id_ for _, id_, _ in window]
