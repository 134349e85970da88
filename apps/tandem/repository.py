"""The model repository: models/<name>/<version>/ holding the artefact and its model.yaml card."""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .protocol import InferenceError, ModelNotFound
from .runtime import Model as Runtime
from .runtime import TensorSpec, runtime_class

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Model:
    name: str
    version: str
    card: dict[str, Any]
    runtime: Runtime
    platform: str = "onnxruntime_onnx"
    labels: list[str] = field(default_factory=list)

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """The OIP model metadata response."""
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.platform,
            "inputs": [_spec_json(spec) for spec in self.runtime.inputs.values()],
            "outputs": [_spec_json(spec) for spec in self.runtime.outputs.values()],
        }


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}


def check_name(kind: str, value: str) -> str:
    """Model names and versions become paths: refuse anything that could leave the repository."""
    if not _NAME.match(value) or ".." in value:
        raise InferenceError(f"{kind} '{value}' is not a valid name (letters, digits, '_', '-', '.')")
    return value


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class ModelRepository:
    """Loads the versions of the models a service hosts and finds them by name and version."""

    def __init__(self, root: Path, names: list[str], intra_op_threads: int = 1):
        self.root = root
        self.intra_op_threads = intra_op_threads
        self.models: dict[str, dict[str, Model]] = {}
        for name in names:
            self.load(name)

    def load(self, name: str) -> None:
        folder = self.root / check_name("model", name)
        versions = sorted((path.name for path in folder.glob("*") if (path / "model.yaml").is_file()), key=_version_key)
        if not versions:
            raise FileNotFoundError(f"no model versions in {folder}: run `make models`")
        self.models[name] = {version: self._load_version(folder / version) for version in versions}

    def _load_version(self, folder: Path) -> Model:
        card = yaml.safe_load((folder / "model.yaml").read_text())
        runtime = runtime_class(card)(folder, card, self.intra_op_threads)
        return Model(card["name"], str(card["version"]), card, runtime, labels=card.get("labels", []))

    def versions(self, name: str) -> list[str]:
        return list(self._versions_of(name))

    def _versions_of(self, name: str) -> dict[str, Model]:
        check_name("model", name)
        versions = self.models.get(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' is not served here; models: {sorted(self.models)}")
        return versions

    def get(self, name: str, version: str | None = None) -> Model:
        """The named version, or the default (the highest) when `version` is None."""
        versions = self._versions_of(name)
        if version is None:
            return versions[max(versions, key=_version_key)]
        check_name("version", version)
        if version not in versions:
            raise ModelNotFound(f"model '{name}' has no version '{version}'; versions: {list(versions)}")
        return versions[version]
