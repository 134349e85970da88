"""Prometheus metrics shared by every service (served at /metrics)."""

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
