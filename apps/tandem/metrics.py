"""Prometheus metrics shared by every service (served at /metrics)."""

from functools import cache

from prometheus_client import Counter, Histogram

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
BATCH_SIZE = Histogram(
    "tandem_batch_size",
    "Rows per batch that the adaptive batcher ran",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_QUEUE_SECONDS = Histogram(
    "tandem_batch_queue_seconds",
    "Time a request waited for its batch to start",
    ["model", "version"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
BATCHES = Counter(
    "tandem_batches",
    "Batches the adaptive batcher ran, by why each closed: full (max_batch_size rows), max_wait (it waited that long"
    " for company) or queue_empty (nothing more was queued and waiting for more would not pay)",
    ["model", "version", "reason"],
)

# The child of each label set, looked up once: `labels()` takes a lock and checks its arguments on every call, which
# costs a small model's inference more than counting it does. Label values are bounded: names no model has are
# counted under "".
inferences = cache(INFERENCES.labels)
inference_seconds = cache(INFERENCE_SECONDS.labels)
