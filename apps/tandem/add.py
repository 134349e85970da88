"""`tandem add`: a model folder <repository>/<name>/<version>/ (model.yaml and artefacts) from what a user has:
an ONNX file, a scikit-learn estimator saved with joblib or pickle, or a Hugging Face model folder.

Pickles (joblib included) run code when they are loaded: add only estimators you trust. ONNX files do not.
"""

import hashlib
import pickle
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .card import ModelCard
from .protocol import DATATYPES
from .repository import Model, check_name, load_version
from .runtime import TensorSpec, graph_specs

PICKLES = (".joblib", ".pkl", ".pickle")


class AddError(Exception):
    """The artefact cannot become a model; the message names the file and what is wrong."""


def _tensor(spec: TensorSpec, **extra: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape, **extra}


def _packages(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def onnx_fields(path: Path) -> dict[str, Any]:
    """Card fields of an ONNX graph: inputs and outputs as the graph declares them."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for every kind of bad file
        raise AddError(f"{path}: not an ONNX model onnxruntime can load: {error}") from None
    inputs, outputs = graph_specs(session)
    unsupported = [spec for spec in inputs + outputs if spec.datatype not in DATATYPES]
    if unsupported:
        names = ", ".join(f"{spec.name} ({spec.datatype})" for spec in unsupported)
        raise AddError(f"{path}: tensors of types OIP has no datatype for: {names}")
    return {"inputs": [_tensor(spec) for spec in inputs], "outputs": [_tensor(spec) for spec in outputs]}


def load_estimator(path: Path) -> Any:
    """A scikit-learn estimator from joblib or pickle. This runs the pickle's code: trusted files only."""
    try:
        if path.suffix == ".joblib":
            import joblib

            estimator = joblib.load(path)
        else:
            with path.open("rb") as file:
                estimator = pickle.load(file)
    except Exception as error:  # a broken pickle can raise nearly anything
        raise AddError(f"{path}: not a pickle this Python can read: {type(error).__name__}: {error}") from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params") and hasattr(estimator, "n_features_in_")):
        raise AddError(
            f"{path}: holds a {type(estimator).__module__}.{type(estimator).__name__}, not a fitted "
            "scikit-learn estimator"
        )
    return estimator


def sklearn_fields(estimator: Any, path: Path, folder: Path) -> dict[str, Any]:
    """Converts the estimator to folder/model.onnx with skl2onnx; card fields from the estimator."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError:
        raise AddError("converting scikit-learn models needs skl2onnx: pip install 'tandem[models]'") from None
    features = int(estimator.n_features_in_)
    names = [str(name) for name in getattr(estimator, "feature_names_in_", [])] or None
    classifier = hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba")
    # Probabilities as a plain [rows, classes] tensor, not a list of dicts (OIP has no such datatype).
    options = {id(estimator): {"zipmap": False}} if classifier else None
    try:
        graph = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, features]))], options=options)
    except Exception as error:  # skl2onnx raises plain RuntimeError/NameError for estimators it cannot convert
        raise AddError(f"{path}: skl2onnx cannot convert {type(estimator).__name__}: {error}") from None
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    fields = onnx_fields(folder / "model.onnx")
    fields["inputs"][0]["features"] = names
    if names is None:
        fields["inputs"][0]["description"] = f"{features} features per row"
    if classifier:
        fields["labels"] = [str(label) for label in estimator.classes_]
    fields["description"] = f"scikit-learn {type(estimator).__name__}, converted to ONNX by skl2onnx"
    fields["details"] = {"estimator": f"{type(estimator).__module__}.{type(estimator).__name__}"}
    return fields


def huggingface_fields(folder: Path, task: str | None) -> dict[str, Any]:
    from .huggingface import card_fields

    try:
        return card_fields(folder, task)
    except ValueError as error:
        raise AddError(str(error)) from None


def add(
    artefact: Path, name: str, repository: Path, model_version: str = "1", task: str | None = None
) -> tuple[Path, Model]:
    """Writes repository/name/version/ from `artefact` and loads it; returns the folder and the loaded model.
    Nothing is left behind when it fails."""
    check_name("model", name)
    check_name("version", model_version)
    if not artefact.exists():
        raise AddError(f"{artefact}: no such file or folder")
    folder = repository / name / model_version
    if folder.exists():
        raise AddError(f"{folder} exists already: give another --version, or remove it first")
    folder.mkdir(parents=True)
    try:
        fields = _write_artefacts(artefact, folder, task)
        fields["provenance"] = {
            "source": artefact.name,
            "packages": _packages("onnxruntime", "scikit-learn", "skl2onnx", "transformers", "tandem"),
            "python": sys.version.split()[0],
            "artefacts_sha256": {
                path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted(folder.rglob("*"))
                if path.is_file()
            },
        }
        card = ModelCard.parse({"name": name, "version": model_version, **fields}, folder / "model.yaml")
        card.write(folder)
        return folder, load_version(folder)
    except Exception:
        shutil.rmtree(folder)
        if not any((repository / name).iterdir()):
            (repository / name).rmdir()
        raise


def _write_artefacts(artefact: Path, folder: Path, task: str | None) -> dict[str, Any]:
    if artefact.is_dir():
        if not (artefact / "config.json").is_file():
            raise AddError(f"{artefact}: a folder must be a Hugging Face model folder, and it has no config.json")
        shutil.copytree(artefact, folder, dirs_exist_ok=True)
        return huggingface_fields(folder, task)
    if artefact.suffix == ".onnx":
        fields = onnx_fields(artefact)
        shutil.copyfile(artefact, folder / "model.onnx")
        return {**fields, "description": f"ONNX model from {artefact.name}"}
    if artefact.suffix in PICKLES:
        estimator = load_estimator(artefact)
        shutil.copyfile(artefact, folder / f"estimator{artefact.suffix}")  # the original, kept beside its ONNX form
        return sklearn_fields(estimator, artefact, folder)
    raise AddError(
        f"{artefact}: not a model tandem knows: give an .onnx file, a scikit-learn estimator saved with joblib or "
        f"pickle ({', '.join(PICKLES)}), or a Hugging Face model folder"
    )
