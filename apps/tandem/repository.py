"""The model repository: models/<name>/<version>/ holding model.yaml and its artefacts.

Versions live side by side; the default is the highest. Models load and unload while the service
runs: a request holds the version it started with, so a reload never fails a request in flight.
"""

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .batching import AdaptiveBatcher
from .protocol import InferenceError, ModelNotFound
from .runtime import Model as Runtime
from .runtime import TensorSpec, runtime_class
from .settings import BatchingSettings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Model:
    """One loaded version: its card, its runtime and, when batching is on, its batcher."""

    name: str
    version: str
    card: dict[str, Any]
    runtime: Runtime
    batcher: AdaptiveBatcher | None = None
    platform: str = "onnxruntime_onnx"

    async def predict(self, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        names = self.runtime.check(inputs, outputs)
        if self.batcher is not None:
            return await self.batcher.predict(inputs, names)
        # Off the event loop: a heavy model must not stall every other request of the service.
        results = await asyncio.to_thread(self.runtime.run, inputs, names)
        return {name: results[name] for name in names}

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """The OIP model metadata response."""
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.platform,
            "inputs": [_spec_json(spec) for spec in self.runtime.inputs.values()],
            "outputs": [_spec_json(spec) for spec in self.runtime.outputs.values()],
        }

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()


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
    """The models of one service: those whose model.yaml names the service, loaded on demand."""

    def __init__(
        self,
        root: Path,
        service: str,
        intra_op_threads: int = 1,
        batching: dict[str, BatchingSettings] | None = None,
    ):
        self.root = root
        self.service = service
        self.intra_op_threads = intra_op_threads
        self.batching = batching or {}
        self.models: dict[str, dict[str, Model]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def index(self) -> list[dict[str, Any]]:
        """Every model of this service on disk, with its state (the OIP repository index)."""
        entries = []
        for card_file in sorted(self.root.glob("*/*/model.yaml")):
            name, version = card_file.parent.parent.name, card_file.parent.name
            if name not in self.models and not self._owned(card_file):
                continue
            loaded = version in self.models.get(name, {})
            entries.append({"name": name, "version": version, "state": "READY" if loaded else "UNAVAILABLE"})
        return entries

    def _owned(self, card_file: Path) -> bool:
        return yaml.safe_load(card_file.read_text()).get("service") == self.service

    async def load(self, name: str) -> None:
        """Loads (or reloads) every version of `name`; the old versions serve until the new ones are ready."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            versions = await asyncio.to_thread(self._read_versions, name)
            previous = self.models.get(name, {})
            self.models[name] = versions
            for model in previous.values():
                await model.close()

    async def unload(self, name: str) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            versions = self.models.pop(check_name("model", name), None)
            if versions is None:
                raise ModelNotFound(f"model '{name}' is not loaded")
            for model in versions.values():
                await model.close()

    def _read_versions(self, name: str) -> dict[str, Model]:
        folder = self.root / check_name("model", name)
        cards = sorted(folder.glob("*/model.yaml"), key=lambda card: _version_key(card.parent.name))
        if not cards:
            raise ModelNotFound(f"model '{name}' is not in the repository")
        if not self._owned(cards[-1]):
            raise ModelNotFound(f"model '{name}' belongs to another service, not {self.service}")
        return {card.parent.name: self._load_version(card.parent) for card in cards}

    def _load_version(self, folder: Path) -> Model:
        card = yaml.safe_load((folder / "model.yaml").read_text())
        runtime = runtime_class(card)(folder, card, self.intra_op_threads)
        name, version = card["name"], str(card["version"])
        batching = self.batching.get(name)
        batcher = None
        if batching is not None and batching.max_batch_size > 1:
            batcher = AdaptiveBatcher(runtime, (name, version), batching.max_batch_size, batching.max_wait_ms / 1000)
        return Model(name, version, card, runtime, batcher, card.get("platform", "onnxruntime_onnx"))

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
