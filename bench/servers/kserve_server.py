"""One benchmark model served by KServe's Python ModelServer (its v2 REST route), run in KServe's own venv.

    python bench/servers/kserve_server.py --model diabetes --http_port 8080 --enable_grpc false

A custom `kserve.Model`, written as KServe's docs show: `load()` and a synchronous `predict()`.
"""

import argparse
from pathlib import Path

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from workloads import WORKLOADS, load

ROOT = Path(__file__).resolve().parents[2]


class BenchModel(kserve.Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.workload = WORKLOADS[name]
        self.load()

    def load(self) -> bool:
        self.predict_rows = load(self.workload, ROOT / "models")
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        result = self.predict_rows(payload.inputs[0].as_numpy())
        output = InferOutput(name=self.workload.output_name, shape=list(result.shape), datatype="FP32")
        output.set_data_from_numpy(result, binary_data=False)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model", choices=sorted(WORKLOADS), required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([BenchModel(args.model)])
