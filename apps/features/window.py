"""One machine's rolling window of readings, as kept in the state store between events.

Readings are kept in timestamp order, so one that arrives late (a redelivery, a retry) still lands where it belongs;
each reading's prediction is computed from the WINDOW readings ending at it, with tandem.fleet.windows_features, the
computation the models were trained on, once all of them are there: a late reading can complete the window of a
later one that came first.

The state travels through the sidecar twice per delivery (read, then written in a transaction), so it is kept
small: the values as one base64 block of float64 (exact, a third of their JSON), and the reading ids seen as
digests (tandem.seen).
"""

import base64
import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tandem.fleet import CHANNELS, WINDOW, windows_features
from tandem.seen import SeenIds

# Readings kept beyond one window, so that a reading up to this many places late still finds its full window. One
# later than that (a message redelivered after the pub/sub's processingTimeout, e.g. one whose delivery was cut off
# when Redis went down) is LATE: the readings its window needs are gone.
SLACK = 10
KEPT = WINDOW + SLACK
# Reading ids remembered for idempotency; a redelivery older than this many readings is LATE (beyond the window too).
SEEN = 256
# What adding a reading did.
ADDED, DUPLICATE, LATE = "added", "duplicate", "late"


@dataclass(eq=False)  # compare their to_state(): the values are an array
class Window:
    # (seconds since the epoch, reading id), oldest first
    readings: list[tuple[float, str]] = field(default_factory=list)
    # their values, one row per reading in CHANNELS order: float64 [readings, channels]. One array rather than a
    # list per reading: the due windows are slices of it, where building them from lists for every reading added
    # was a sixth of the features service's CPU under load.
    values: np.ndarray = field(default_factory=lambda: np.empty((0, len(CHANNELS))))
    seen: SeenIds = field(default_factory=lambda: SeenIds(SEEN))  # the ids added
    count: int = 0  # distinct readings ever added
    predicted: list[str] = field(default_factory=list)  # ids of the kept readings whose prediction was published

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "Window":
        if state is None:
            return cls()
        if "readings" in state:  # saved before the values and ids were packed
            readings = [(float(ts), str(id_)) for ts, id_, _ in state["readings"]]
            values = np.array([values for _, _, values in state["readings"]], dtype=np.float64)
        else:
            readings = list(zip(state["timestamps"], state["ids"], strict=True))
            values = np.frombuffer(base64.b64decode(state["values"]), dtype="<f8")
        window = cls(
            readings, values.reshape(-1, len(CHANNELS)), SeenIds.from_state(SEEN, state["seen"]), int(state["count"])
        )
        # A window saved before predictions were tracked: every reading with a full window had its prediction.
        window.predicted = list(state["predicted"]) if "predicted" in state else window.due()
        return window

    def to_state(self) -> dict[str, Any]:
        return {
            "timestamps": [timestamp for timestamp, _ in self.readings],
            "ids": [id_ for _, id_ in self.readings],
            "values": base64.b64encode(self.values.astype("<f8").tobytes()).decode("ascii"),
            "seen": self.seen.to_state(),
            "count": self.count,
            "predicted": self.predicted,
        }

    def add(self, reading_id: str, timestamp: float, values: dict[str, float]) -> str:
        """Adds a reading in timestamp order: ADDED; DUPLICATE if this reading id was added before; LATE if readings
        older than it already left the window and fewer than WINDOW - 1 are kept, so that its own window can never
        be computed (it would otherwise be counted and never predicted). Nothing changes unless ADDED."""
        if reading_id in self.seen:
            return DUPLICATE
        place = bisect.bisect(self.readings, (timestamp, reading_id))
        if self.count > len(self.readings) and place + 1 < WINDOW:
            return LATE
        self.readings.insert(place, (timestamp, reading_id))
        row = np.array([[values[channel] for channel in CHANNELS]], dtype=np.float64)
        self.values = np.concatenate((self.values[:place], row, self.values[place:]))
        del self.readings[:-KEPT]
        self.values = self.values[-KEPT:]
        kept = {id_ for _, id_ in self.readings}
        self.predicted = [id_ for id_ in self.predicted if id_ in kept]
        self.seen.add(reading_id)
        self.count += 1
        return ADDED

    def due(self) -> list[str]:
        """Ids of the kept readings that have their full window but no prediction yet, oldest first: the reading
        just added, and a later one that came before it (readings arrive out of order: a bulk publish is stored in
        any order, deliveries run in parallel) and whose window it completed."""
        return [self.readings[end][1] for end in self._due_ends()]

    def due_windows(self) -> list[tuple[str, np.ndarray, list[str]]]:
        """For each due reading, oldest first: its id, the values of the WINDOW readings ending at it (float64
        [channels, WINDOW], as tandem.fleet.windows_features takes them), and their ids."""
        ends = self._due_ends()
        if not ends:
            return []
        return [(self.readings[end][1], *self._window_ending(end)) for end in ends]

    def _due_ends(self) -> list[int]:
        """Indexes in `readings` of the due readings, oldest first."""
        predicted = set(self.predicted)
        return [end for end in range(WINDOW - 1, len(self.readings)) if self.readings[end][1] not in predicted]

    def features(self, reading_id: str) -> tuple[np.ndarray, list[str]] | None:
        """The feature vector of the WINDOW readings ending at `reading_id`, and their ids; None while there are
        fewer than WINDOW of them (or the reading is too late to have its window here any more)."""
        end = next((index for index, reading in enumerate(self.readings) if reading[1] == reading_id), None)
        if end is None or end + 1 < WINDOW:
            return None
        values, covered = self._window_ending(end)
        return windows_features(values[np.newaxis])[0], covered

    def _window_ending(self, end: int) -> tuple[np.ndarray, list[str]]:
        """The values (float64 [channels, WINDOW]) and ids of the WINDOW kept readings ending at index `end`."""
        start = end + 1 - WINDOW
        return self.values[start : end + 1].T, [id_ for _, id_ in self.readings[start : end + 1]]
