"""A gRPC load generator for one call of the Open Inference Protocol, as hey is for HTTP: `concurrency` callers send
the same serialized request back to back over one channel for `seconds` (after `warmup` seconds not counted).

    python bench/grpc_load.py --target HOST:PORT --request FILE --metadata '{"k": "v"}' --concurrency 8 --seconds 5

Prints one JSON object: requests_per_s, p50_ms, p99_ms, requests, errors (and the first error's status).
"""

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def load(args: argparse.Namespace) -> dict:
    request = Path(args.request).read_bytes()
    metadata = tuple(json.loads(args.metadata).items())
    limit = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(args.target, options=limit) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: nothing is decoded on this side
        latencies: list[float] = []
        errors: list[str] = []
        started = time.perf_counter()
        counting_from = started + args.warmup
        until = counting_from + args.seconds

        async def caller() -> None:
            while (now := time.perf_counter()) < until:
                try:
                    await call(request, metadata=metadata, timeout=60)
                except grpc.aio.AioRpcError as error:
                    if now >= counting_from:
                        errors.append(f"{error.code().name}: {error.details()}")
                    continue
                if now >= counting_from:
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - counting_from
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) * 1000 if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000 if latencies else None,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--request", required=True, help="a serialized ModelInferRequest")
    parser.add_argument("--metadata", default="{}")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    print(json.dumps(asyncio.run(load(parser.parse_args()))))


if __name__ == "__main__":
    main()
