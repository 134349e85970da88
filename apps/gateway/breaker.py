"""A circuit breaker per service, kept by the gateway.

Dapr's own breaker counts every non-2xx answer as a failure, so a client sending bad input would open it for
everyone; this one counts only what says the service is unavailable (it could not be reached, timed out, or
answered 502-504).
"""

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """Opens after `failures` unavailable answers in a row; after `open_seconds` lets one trial call through
    (half-open): its success closes the breaker, its failure opens it again."""

    def __init__(self, failures: int = 5, open_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.open_seconds = open_seconds
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self.opened_at >= self.open_seconds else OPEN

    def wait(self) -> float:
        """0 when a call may go now; otherwise the seconds until the breaker lets a trial through."""
        state = self.state
        if state == CLOSED:
            return 0.0
        if state == HALF_OPEN and not self.trial_running:
            self.trial_running = True
            return 0.0
        assert self.opened_at is not None
        return max(self.opened_at + self.open_seconds - self.clock(), 1.0)

    def abandoned(self) -> None:
        """A call that went ahead ended with no verdict (the client went away): free the trial slot."""
        self.trial_running = False

    def succeeded(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self.trial_running = False

    def failed(self) -> None:
        self.consecutive += 1
        if self.trial_running or self.consecutive >= self.failures:
            self.opened_at = self.clock()
        self.trial_running = False
