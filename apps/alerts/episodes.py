"""When a machine's predictions open and close an alert: thresholds with hysteresis, judged on its newest prediction.

An episode opens when the probability of failure reaches `open_at`, and closes only after `close_after` predictions
in a row at or below `close_at` (the machine recovered, or was replaced by a new one): a probability that wavers
around one threshold gives one alert, not a storm.
"""

from dataclasses import dataclass, field
from typing import Any

from tandem.seen import SeenIds

# Prediction ids remembered per machine for idempotency.
SEEN = 256


@dataclass(frozen=True)
class Thresholds:
    open_at: float
    close_at: float
    close_after: int


@dataclass(frozen=True)
class Change:
    kind: str  # "opened" or "closed"
    alert_id: str


@dataclass
class MachineState:
    predictions: int = 0  # distinct predictions ever applied
    seen: SeenIds = field(default_factory=lambda: SeenIds(SEEN))  # the prediction ids applied
    latest: float | None = None  # timestamp of the newest prediction, seconds since the epoch
    last: dict[str, Any] | None = None  # the newest prediction
    open: str | None = None  # id of the open alert
    episodes: int = 0
    calm: int = 0  # predictions in a row at or below close_at while an alert is open

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "MachineState":
        if not state:
            return cls()
        return cls(**{**state, "seen": SeenIds.from_state(SEEN, state["seen"])})

    def to_state(self) -> dict[str, Any]:
        return {**self.__dict__, "seen": self.seen.to_state()}

    def apply(
        self, machine: str, prediction_id: str, timestamp: float, prediction: dict[str, Any], thresholds: Thresholds
    ) -> Change | None:
        """Counts the prediction and returns the alert it opens or closes, if any. Call only for unseen ids."""
        self.predictions += 1
        self.seen.add(prediction_id)
        if self.latest is not None and timestamp < self.latest:
            return None  # a late prediction: counted, but the machine is judged by its newest one
        self.latest = timestamp
        self.last = prediction
        probability = prediction["failure_probability"]
        if self.open is None:
            if probability >= thresholds.open_at:
                self.episodes += 1
                self.open = f"{machine}-{self.episodes}"
                self.calm = 0
                return Change("opened", self.open)
            return None
        self.calm = self.calm + 1 if probability <= thresholds.close_at else 0
        if self.calm < thresholds.close_after:
            return None
        closed, self.open, self.calm = self.open, None, 0
        return Change("closed", closed)
