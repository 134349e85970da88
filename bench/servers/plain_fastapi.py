"""The floor for a Python HTTP model server: a plain FastAPI app with the same OIP infer route as Tandem.

    python bench/servers/plain_fastapi.py --port 8080 --model diabetes   (PYTHONPATH=bench)

No kit: JSON in (orjson, the fastest common parser), numpy, the model off the event loop (as Tandem runs it), JSON out. No checks beyond
what numpy does, no metrics, no middleware.
"""

import argparse
import asyncio
from pathlib import Path

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import ORJSONResponse
from workloads import WORKLOADS, load

ROOT = Path(__file__).resolve().parents[2]


def make_app(model: str, models: Path) -> FastAPI:
    workload = WORKLOADS[model]
    predict = load(workload, models)
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> ORJSONResponse:
        tensor = orjson.loads(await request.body())["inputs"][0]
        dtype = object if tensor["datatype"] == "BYTES" else np.float32
        rows = np.array(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        result = await asyncio.to_thread(predict, rows)
        output = {"name": workload.output_name, "shape": list(result.shape), "datatype": "FP32"}
        return ORJSONResponse({"model_name": name, "outputs": [{**output, "data": result.ravel().tolist()}]})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", choices=sorted(WORKLOADS), required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.model, ROOT / "models"), host="127.0.0.1", port=args.port, access_log=False)
