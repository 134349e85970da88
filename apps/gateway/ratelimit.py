"""Requests per second per API key: a token bucket per client, in this gateway process."""

import math
import time
from collections.abc import Callable


class RateLimiter:
    """Each client may send `burst` requests at once and `rate` per second on average; 0 turns the limit off."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(burst, 1)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)

    def retry_after(self, client: str) -> int:
        """Takes a token and returns 0, or returns the whole seconds to wait when the bucket is empty."""
        if self.rate <= 0:
            return 0
        now = self.clock()
        tokens, then = self.buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self.buckets[client] = (tokens - 1.0, now)
            return 0
        self.buckets[client] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))
