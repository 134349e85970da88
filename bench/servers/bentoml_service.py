"""One benchmark model as a BentoML service, run in BentoML's own venv.

    BENCH_MODEL=diabetes [BENCH_MAX_BATCH_SIZE=32] bentoml serve bentoml_service:BenchService --port 8080

BentoML has no Open Inference Protocol: the route takes the same OIP JSON body (its `inputs` field is
the method's one parameter) and answers with the list of output tensors, the OIP answer's `outputs`.
With BENCH_MAX_BATCH_SIZE set, the method is `batchable`: BentoML's adaptive batching joins the
`inputs` lists of concurrent requests into one call and splits the answer back.
"""

import os
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from workloads import WORKLOADS, load

ROOT = Path(__file__).resolve().parents[2]
MODEL = os.environ["BENCH_MODEL"]
MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "0"))
BATCHING = {"batchable": True, "max_batch_size": MAX_BATCH_SIZE} if MAX_BATCH_SIZE else {}


@bentoml.service(workers=1)
class BenchService:
    def __init__(self) -> None:
        self.workload = WORKLOADS[MODEL]
        self.predict_rows = load(self.workload, ROOT / "models")

    @bentoml.api(route=f"/v2/models/{MODEL}/infer", **BATCHING)
    def infer(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One OIP input tensor per request in, one output tensor per request out."""
        dtype = object if self.workload.datatype == "BYTES" else np.float32
        tensors = [np.array(tensor["data"], dtype=dtype).reshape(tensor["shape"]) for tensor in inputs]
        result = self.predict_rows(np.concatenate(tensors))
        outputs, start = [], 0
        for tensor in tensors:
            part = result[start : start + len(tensor)]
            start += len(tensor)
            outputs.append(
                {
                    "name": self.workload.output_name,
                    "shape": list(part.shape),
                    "datatype": "FP32",
                    "data": part.ravel().tolist(),
                }
            )
        return outputs
