"""One benchmark model as an MLServer custom runtime, run in MLServer's own venv.

The harness writes settings.json and model-settings.json (ports, adaptive batching) and starts
`mlserver start <folder>`; the model's name in model-settings.json picks the workload.
"""

from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from workloads import WORKLOADS, load

ROOT = Path(__file__).resolve().parents[2]


class BenchModel(MLModel):
    async def load(self) -> bool:
        self.workload = WORKLOADS[self.name]
        self.predict_rows = load(self.workload, ROOT / "models")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = payload.inputs[0]
        if tensor.datatype == "BYTES":
            rows = np.array(StringCodec.decode_input(tensor), dtype=object)
        else:
            rows = NumpyCodec.decode_input(tensor)
        result = self.predict_rows(rows)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(self.workload.output_name, result)]
        )
