"""The `tandem` command: serve a model repository, add a model to one, check one.

tandem serve [REPOSITORY] [--models a,b] [--port 8080]
tandem add ARTEFACT --name NAME [--version 1] [--repository models] [--task TASK]
tandem check REPOSITORY
tandem schema
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import uvicorn
from pydantic_settings import SettingsConfigDict

from .card import CARD_FILE, schema_text
from .people import people_router
from .protocol import DATATYPES
from .repository import Model, failure_reason, load_version
from .runtime import sample
from .server import make_app
from .settings import DaprSettings, ServiceSettings

SAMPLE_TEXT = "Tandem serves this model."


class ServeSettings(ServiceSettings):
    """`tandem serve`: every knob is also an environment variable, TANDEM_<NAME> (flags win)."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore")

    port: int = 8080


def serve(args: argparse.Namespace) -> None:
    overrides = {}
    if args.repository is not None:  # else TANDEM_MODEL_REPOSITORY, else ./models
        overrides["model_repository"] = args.repository
    if args.models:
        overrides["models"] = args.models
    settings = ServeSettings(**overrides)  # type: ignore[arg-type]
    dapr = DaprSettings()
    # Under `dapr run` the app id is the server's name: the gateway learns which app serves which model by it.
    name = args.name or os.environ.get("APP_ID") or "tandem"
    app = make_app(name, settings, dapr, routers=(people_router(settings),), every_model=True)
    port = args.port or dapr.app_port or settings.port
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_seconds,
    )


def sample_request(model: Model) -> dict:
    """An OIP request the model accepts: a sentence for text, zeros of the right shape for numbers."""
    inputs = []
    for spec in model.runtime.inputs.values():
        array = sample(spec)
        data = [SAMPLE_TEXT] * array.size if spec.datatype == "BYTES" else array.ravel().tolist()
        inputs.append({"name": spec.name, "shape": list(array.shape), "datatype": spec.datatype, "data": data})
    return {"inputs": inputs}


def _arrays(request: dict) -> dict[str, np.ndarray]:
    return {
        tensor["name"]: np.array(tensor["data"], dtype=DATATYPES[tensor["datatype"]]).reshape(tensor["shape"])
        for tensor in request["inputs"]
    }


def add(args: argparse.Namespace) -> int:
    from .add import AddError
    from .add import add as add_model

    try:
        folder, model = add_model(args.artefact, args.name, args.repository, args.version, args.task)
    except AddError as error:
        print(f"tandem add: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the model was written but does not load: say why, nothing is left behind
        print(f"tandem add: {failure_reason(args.repository / args.name / args.version, error)}", file=sys.stderr)
        return 2
    request = sample_request(model)
    outputs = model.runtime.predict(_arrays(request))
    print(f"added {folder} ({model.card.runtime} runtime)")
    for spec in model.runtime.inputs.values():
        print(f"  input  {spec.name}: {spec.datatype} {spec.shape}")
    for name, array in outputs.items():
        spec = model.runtime.outputs[name]
        print(f"  output {name}: {spec.datatype} {spec.shape}; for the sample: {_preview(array)}")
    print("\nServe the repository and call the model:\n")
    print(f"  tandem serve {args.repository}")
    print(f"  curl -s localhost:8080/v2/models/{model.name}/infer -d '{json.dumps(request, separators=(',', ':'))}'")
    return 0


def _preview(array: np.ndarray) -> str:
    flat = array.ravel()[:6].tolist()
    text = json.dumps([value.decode() if isinstance(value, bytes) else value for value in flat], default=str)
    return text[:200] + (" ..." if array.size > 6 or len(text) > 200 else "")


def check(args: argparse.Namespace) -> int:
    """Validates every card and loads every model; lists every problem. Exit status 1 if there is one."""
    root: Path = args.repository
    if not root.is_dir():
        print(f"tandem check: {root} is not a folder", file=sys.stderr)
        return 2
    problems = 0
    folders = sorted(
        path
        for path in root.glob("*/*")
        if path.is_dir() and not path.name.startswith((".", "_")) and not path.parent.name.startswith((".", "_"))
    )
    for folder in folders:
        if not (folder / CARD_FILE).is_file():
            problems += 1
            print(f"problem {folder}: no {CARD_FILE} (tandem add writes one)")
            continue
        try:
            model = load_version(folder)
        except Exception as error:  # every kind of failure is a problem to list, not a reason to stop
            problems += 1
            print(f"problem {failure_reason(folder, error)}")
            continue
        print(
            f"ok      {folder} ({model.card.runtime}, {len(model.runtime.inputs)} in, {len(model.runtime.outputs)} out)"
        )
    print(f"{len(folders)} model versions, {problems} with problems")
    return 1 if problems else 0


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(
        prog="tandem", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = commands.add_subparsers(dest="command", required=True)

    serving = sub.add_parser("serve", help="an Open Inference Protocol v2 server for a model repository")
    serving.add_argument("repository", nargs="?", type=Path, help="default: TANDEM_MODEL_REPOSITORY, else ./models")
    serving.add_argument(
        "--models",
        type=lambda value: [name for name in value.split(",") if name],
        help="only these models, comma separated",
    )
    serving.add_argument("--port", type=int, help="default: APP_PORT (set by dapr run), else 8080")
    serving.add_argument("--host", help="default: 127.0.0.1 (TANDEM_HOST)")
    serving.add_argument("--name", help="the server's name in /v2 and in announcements; default: APP_ID, else tandem")

    adding = sub.add_parser(
        "add", help="a model folder from an ONNX file, a scikit-learn estimator or a Hugging Face folder"
    )
    adding.add_argument("artefact", type=Path, help="model.onnx, estimator.joblib/.pkl, or a Hugging Face folder")
    adding.add_argument("--name", required=True, help="the model's name")
    adding.add_argument("--version", default="1", help="default: 1")
    adding.add_argument("--repository", type=Path, default=Path("models"), help="default: ./models")
    adding.add_argument(
        "--task",
        choices=["text-classification", "feature-extraction", "token-classification"],
        help="Hugging Face folders: what the model does (default: read from config.json)",
    )

    checking = sub.add_parser("check", help="validate every card and load every model of a repository")
    checking.add_argument("repository", type=Path)

    sub.add_parser("schema", help="print the model card's JSON Schema")
    return commands


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        serve(args)
        return 0
    if args.command == "add":
        return add(args)
    if args.command == "check":
        return check(args)
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
