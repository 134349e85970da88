"""Prometheus metrics shared by every service (served at /metrics)."""

from bisect import bisect_left
from collections.abc import Iterator
from functools import cache
from itertools import accumulate

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

INFERENCES = Counter(
    "tandem_inference_requests",
    "Inference requests by model, version and outcome",
    ["model", "version", "outcome"],
)
INFERENCE_SECONDS = Histogram(
    "tandem_inference_seconds",
    "Time from decoded request to encoded response",
    ["model", "version"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class BatchStats:
    """One model version's batching figures as plain numbers, which `BatchCollector` turns into Prometheus samples
    when /metrics is scraped. A prometheus_client child takes a lock per update (0.4 µs for a counter, 1.1-1.4 µs
    for a histogram on the README's benchmark machine): the three updates of a request that runs alone cost more
    than the rest of the batcher's bookkeeping. Updated on the event loop only."""

    SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128)
    QUEUE_BOUNDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

    def __init__(self, reasons: tuple[str, ...]) -> None:
        self.closed = dict.fromkeys(reasons, 0)
        # One count per bucket, not cumulative; the last is +Inf.
        self.sizes = [0] * (len(self.SIZE_BOUNDS) + 1)
        self.rows = 0
        self.queued = [0] * (len(self.QUEUE_BOUNDS) + 1)
        self.queued_seconds = 0.0

    def close(self, reason: str) -> None:
        self.closed[reason] += 1

    def ran(self, rows: int) -> None:
        self.sizes[bisect_left(self.SIZE_BOUNDS, rows)] += 1
        self.rows += rows

    def waited(self, seconds: float) -> None:
        self.queued[bisect_left(self.QUEUE_BOUNDS, seconds)] += 1
        self.queued_seconds += seconds


class BatchCollector(Collector):
    """tandem_batches_total, tandem_batch_size and tandem_batch_queue_seconds of every model version that batches;
    a version loaded again goes on counting where it left off."""

    def __init__(self) -> None:
        self.stats: dict[tuple[str, str], BatchStats] = {}

    def of(self, model: str, version: str, reasons: tuple[str, ...]) -> BatchStats:
        return self.stats.setdefault((model, version), BatchStats(reasons))

    def collect(self) -> Iterator[Metric]:
        closed = CounterMetricFamily(
            "tandem_batches",
            "Batches the adaptive batcher ran, by why each closed: full (max_batch_size rows), max_wait (it waited"
            " that long for company), queue_empty (nothing more was queued and waiting for more would not pay) or idle"
            " (the model was idle and cheap: the request ran at once, alone)",
            labels=["model", "version", "reason"],
        )
        sizes = HistogramMetricFamily(
            "tandem_batch_size", "Rows per batch that the adaptive batcher ran", labels=["model", "version"]
        )
        queued = HistogramMetricFamily(
            "tandem_batch_queue_seconds",
            "Time a request waited for its batch to start (0 for one that ran at once)",
            labels=["model", "version"],
        )
        for labels, stats in list(self.stats.items()):
            for reason, count in list(stats.closed.items()):
                closed.add_metric([*labels, reason], count)
            sizes.add_metric(list(labels), _cumulative(stats.SIZE_BOUNDS, stats.sizes), stats.rows)
            queued.add_metric(list(labels), _cumulative(stats.QUEUE_BOUNDS, stats.queued), stats.queued_seconds)
        yield from (closed, sizes, queued)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    totals = list(accumulate(counts))  # one more than bounds: the last is +Inf
    return [(floatToGoString(bound), total) for bound, total in zip(bounds, totals[:-1], strict=True)] + [
        ("+Inf", totals[-1])
    ]


BATCHES = BatchCollector()
REGISTRY.register(BATCHES)

# The child of each label set, looked up once: `labels()` takes a lock and checks its arguments on every call, which
# costs a small model's inference more than counting it does. Label values are bounded: names no model has are
# counted under "".
inferences = cache(INFERENCES.labels)
inference_seconds = cache(INFERENCE_SECONDS.labels)
