"""tritonclient.grpc or KServe's InferenceGRPCClient, unmodified, in a process of its own: both register the
protocol's messages (`inference.*`) in protobuf's default pool, a second registration fails, and the test process
already holds KServe's.

    python grpc_clients.py PLAN.json ANSWERS.json

PLAN: {"client": "triton" | "kserve", "url": "host:port", "metadata": {name: value}, "calls": [call, ...]}, a call
one of {"call": "server_live" | "server_ready" | "server_metadata" | "index"},
{"call": "model_ready" | "model_metadata" | "load" | "unload", "model": m} (load and unload: tritonclient only) or
{"call": "infer", "model": m, "version": v or "", "inputs": "file.npz", "raw": bool, "id": "..."}.
ANSWERS: one per call, {"ok": value} (an infer's outputs saved in <inputs>.answer.npz, BYTES decoded to text) or
{"code": "NOT_FOUND", "message": "..."}.
"""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _text(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "OS":
        return np.array([item.decode() if isinstance(item, bytes) else item for item in array.flat]).reshape(
            array.shape
        )
    return array


def _datatype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return "BYTES" if array.dtype.kind == "O" else np_to_triton_dtype(array.dtype)


def _save(call: dict, outputs: dict[str, np.ndarray]) -> str:
    target = Path(call["inputs"]).with_suffix(".answer.npz")
    np.savez(target, **{name: _text(array) for name, array in outputs.items()})
    return str(target)


def triton(plan: dict) -> list[dict]:
    import tritonclient.grpc as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(plan["url"])
    metadata = plan["metadata"]

    def run(call: dict) -> Any:
        kind = call["call"]
        if kind == "server_live":
            return client.is_server_live(headers=metadata)
        if kind == "server_ready":
            return client.is_server_ready(headers=metadata)
        if kind == "server_metadata":
            return client.get_server_metadata(headers=metadata, as_json=True)
        if kind == "index":
            return client.get_model_repository_index(headers=metadata, as_json=True)
        if kind == "model_ready":
            return client.is_model_ready(call["model"], headers=metadata)
        if kind == "model_metadata":
            return client.get_model_metadata(call["model"], headers=metadata, as_json=True)
        if kind == "load":
            return client.load_model(call["model"], headers=metadata)
        if kind == "unload":
            return client.unload_model(call["model"], headers=metadata)
        arrays = dict(np.load(call["inputs"], allow_pickle=True))
        tensors = []
        for name, array in arrays.items():
            tensor = client_module.InferInput(name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer(
            call["model"], tensors, model_version=call.get("version", ""), headers=metadata, request_id=call["id"]
        )
        response = result.get_response(as_json=True)
        outputs = {output["name"]: result.as_numpy(output["name"]) for output in response["outputs"]}
        return {"answer": _save(call, outputs), "id": response.get("id", ""), "version": response["model_version"]}

    answers = []
    for call in plan["calls"]:
        try:
            answers.append({"ok": run(call)})
        except InferenceServerException as error:
            answers.append({"code": str(error.status()).removeprefix("StatusCode."), "message": error.message()})
    return answers


def kserve(plan: dict) -> list[dict]:
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    metadata = tuple(plan["metadata"].items())

    async def run(client: Any, call: dict) -> Any:
        kind = call["call"]
        if kind == "server_live":
            return await client.is_server_live(headers=metadata)
        if kind == "server_ready":
            return await client.is_server_ready(headers=metadata)
        if kind == "model_ready":
            return await client.is_model_ready(call["model"], headers=metadata)
        if kind != "infer":
            raise ValueError(f"KServe's gRPC client has no call {kind!r}")
        tensors = []
        for name, array in np.load(call["inputs"], allow_pickle=True).items():
            tensor = InferInput(name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(array, binary_data=call["raw"])
            tensors.append(tensor)
        request = InferRequest(
            model_name=call["model"], infer_inputs=tensors, request_id=call["id"], model_version=call.get("version")
        )
        response = await client.infer(request, headers=metadata)
        outputs = {output.name: output.as_numpy() for output in response.outputs}
        return {"answer": _save(call, outputs), "id": response.id, "version": response.model_version}

    async def run_all() -> list[dict]:
        # No retries: an error must come back as the server gave it.
        client = InferenceGRPCClient(plan["url"], retries=0)
        answers = []
        try:
            for call in plan["calls"]:
                try:
                    answers.append({"ok": await run(client, call)})
                except grpc.aio.AioRpcError as error:
                    answers.append({"code": error.code().name, "message": error.details()})
        finally:
            await client.close()
        return answers

    return asyncio.run(run_all())


if __name__ == "__main__":
    plan = json.loads(Path(sys.argv[1]).read_text())
    answers = {"triton": triton, "kserve": kserve}[plan["client"]](plan)
    Path(sys.argv[2]).write_text(json.dumps(answers))
