"""The model repository: <repository>/<name>/<version>/ holding model.yaml and its artefacts.

Versions live side by side; the default is the highest one loaded. Models load and unload while the service
runs: a request holds the version it started with, so a reload never fails a request in flight. A version that
fails to load (a bad card, a missing file, a runtime error) is UNAVAILABLE with its reason; it never stops the
others, and the index lists it with the reason.
"""

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .batching import AdaptiveBatcher
from .card import CARD_FILE, CardError, ModelCard
from .protocol import InferenceError, ModelNotFound, ModelUnavailable
from .runner import Runner
from .runtime import Model as Runtime
from .runtime import TensorSpec, runtime_class
from .settings import BatchingSettings

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Model:
    """One loaded version: its card, its runtime and, when batching is on, its batcher."""

    name: str
    version: str
    card: ModelCard
    runtime: Runtime
    batcher: AdaptiveBatcher | None = None
    runner: Runner = field(init=False)

    def __post_init__(self) -> None:
        self.runner = Runner(self.runtime.run)

    async def predict(self, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        names = self.runtime.check(inputs, outputs)
        if self.batcher is not None:
            return await self.batcher.predict(inputs, names)
        # Off the event loop unless the model is cheap: a heavy model must not stall every other request.
        results = await self.runner(inputs, names, _rows(inputs))
        return {name: results[name] for name in names}

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """The OIP model metadata response."""
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.card.platform,
            "inputs": [_spec_json(spec) for spec in self.runtime.inputs.values()],
            "outputs": [_spec_json(spec) for spec in self.runtime.outputs.values()],
        }

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        await self.runtime.close()


def _rows(inputs: dict[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()), None)
    return first.shape[0] if first is not None and first.ndim else 1


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}


def check_name(kind: str, value: str) -> str:
    """Model names and versions become paths: refuse anything that could leave the repository."""
    if not _NAME.match(value) or ".." in value:
        raise InferenceError(f"{kind} '{value}' is not a valid name (letters, digits, '_', '-', '.')")
    return value


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def load_version(folder: Path, intra_op_threads: int = 1, batching: BatchingSettings | None = None) -> Model:
    """Reads the card in `folder` and loads its runtime; raises CardError or the runtime's own error."""
    card = ModelCard.read(folder)
    runtime = runtime_class(card)(folder, card, intra_op_threads)
    max_batch_size, max_wait_ms = (
        (batching.max_batch_size, batching.max_wait_ms)
        if batching is not None
        else (card.batching.max_batch_size, card.batching.max_wait_ms)
        if card.batching is not None
        else (1, 0.0)
    )
    batcher = None
    if max_batch_size > 1:
        batcher = AdaptiveBatcher(runtime, (card.name, card.version), max_batch_size, max_wait_ms / 1000)
    return Model(card.name, card.version, card, runtime, batcher)


def failure_reason(folder: Path, error: Exception) -> str:
    """Why a version failed to load, naming its folder unless the message already names the card."""
    message = str(error) or type(error).__name__
    if isinstance(error, CardError):
        return message
    return f"{folder}: {type(error).__name__}: {message}"


class ModelRepository:
    """The models of a repository folder that this server serves, loaded on demand.

    `service` (vision, nlp, ...) keeps the models whose card names that service; None serves every model.
    `only` narrows them further to the names given (empty: all of them).
    """

    def __init__(
        self,
        root: Path,
        service: str | None = None,
        intra_op_threads: int = 1,
        batching: dict[str, BatchingSettings] | None = None,
        only: list[str] | None = None,
    ):
        self.root = root
        self.service = service
        self.intra_op_threads = intra_op_threads
        self.batching = batching or {}
        self.only = set(only or [])
        self.models: dict[str, dict[str, Model]] = {}
        # name -> version -> why it is UNAVAILABLE (the last load of that version failed).
        self.failures: dict[str, dict[str, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def folders(self) -> list[Path]:
        """Every <name>/<version> folder of this server's models on disk."""
        found = sorted(card.parent for card in self.root.glob(f"*/*/{CARD_FILE}"))
        return [folder for folder in found if self._served(folder)]

    def _served(self, folder: Path) -> bool:
        name = folder.parent.name
        if self.only and name not in self.only:
            return False
        return self.service is None or name in self.models or _claimed_service(folder) in (self.service, None)

    def names(self) -> list[str]:
        return sorted({folder.parent.name for folder in self.folders()})

    def index(self) -> list[dict[str, Any]]:
        """Every model version of this server on disk or loaded, with its state and, when unavailable, why (the OIP
        repository index). Reading it never fails because of one bad card."""
        versions = {(folder.parent.name, folder.name) for folder in self.folders()}
        versions |= {(name, version) for name, loaded in self.models.items() for version in loaded}
        entries = []
        for name, version in sorted(versions, key=lambda item: (item[0], _version_key(item[1]))):
            if version in self.models.get(name, {}):
                # Beyond OIP's fields, a ready model's tensors: the gateway's /v2/models lists them without a
                # metadata call per model.
                tensors = self.models[name][version].metadata([])
                entries.append(
                    {
                        "name": name,
                        "version": version,
                        "state": "READY",
                        "reason": "",
                        "inputs": tensors["inputs"],
                        "outputs": tensors["outputs"],
                    }
                )
            else:
                reason = self.failures.get(name, {}).get(version, "not loaded")
                entries.append({"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason})
        return entries

    async def load_all(self) -> None:
        """Loads every model of this server; one that fails is left UNAVAILABLE with its reason."""
        for name in self.names():
            try:
                await self.load(name)
            except InferenceError as error:
                log.warning("model %s is unavailable: %s", name, error)

    async def load(self, name: str) -> None:
        """Loads (or reloads) every version of `name`; the old versions serve until the new ones are ready. A version
        that fails keeps its old copy, if it had one, and its reason; if none of them loads, InferenceError says why."""
        async with self._locks.setdefault(check_name("model", name), asyncio.Lock()):
            loaded, failed = await asyncio.to_thread(self._read_versions, name)
            previous = self.models.get(name, {})
            kept = {version: model for version, model in previous.items() if version in failed}
            versions = {**kept, **loaded}
            if versions:
                self.models[name] = dict(sorted(versions.items(), key=lambda item: _version_key(item[0])))
            else:
                self.models.pop(name, None)
            self.failures[name] = failed
            for version, model in previous.items():
                if version not in kept:
                    await model.close()
            if failed and not loaded:
                reasons = "; ".join(f"version {version}: {why}" for version, why in failed.items())
                raise InferenceError(f"model '{name}' could not be loaded: {reasons}")

    def _read_versions(self, name: str) -> tuple[dict[str, Model], dict[str, str]]:
        folders = [folder for folder in self.folders() if folder.parent.name == name]
        if not folders:
            if (self.root / name).is_dir() and self.service is not None:
                raise ModelNotFound(f"model '{name}' belongs to another service, not {self.service}")
            raise ModelNotFound(f"model '{name}' is not in the repository")
        loaded, failed = {}, {}
        for folder in folders:
            try:
                loaded[folder.name] = load_version(folder, self.intra_op_threads, self.batching.get(name))
            except Exception as error:  # whatever a runtime raises, the other models keep serving
                failed[folder.name] = failure_reason(folder, error)
                log.warning("model %s version %s failed to load: %s", name, folder.name, failed[folder.name])
        return loaded, failed

    async def unload(self, name: str) -> None:
        async with self._locks.setdefault(check_name("model", name), asyncio.Lock()):
            self.failures.pop(name, None)
            versions = self.models.pop(name, None)
            if versions is None:
                raise ModelNotFound(f"model '{name}' is not loaded")
            for model in versions.values():
                await model.close()

    def versions(self, name: str) -> list[str]:
        return list(self._versions_of(name))

    def _versions_of(self, name: str) -> dict[str, Model]:
        check_name("model", name)
        versions = self.models.get(name)
        if not versions:
            failures = self.failures.get(name)
            if failures:
                reasons = "; ".join(f"version {version}: {why}" for version, why in failures.items())
                raise ModelUnavailable(f"model '{name}' is UNAVAILABLE: {reasons}")
            raise ModelNotFound(f"model '{name}' is not served here; models: {sorted(self.models)}")
        return versions

    def get(self, name: str, version: str | None = None) -> Model:
        """The named version, or the default (the highest loaded) when `version` is None."""
        versions = self._versions_of(name)
        if version is None:
            return versions[max(versions, key=_version_key)]
        check_name("version", version)
        if version not in versions:
            why = self.failures.get(name, {}).get(version)
            if why is not None:
                raise ModelUnavailable(f"model '{name}' version '{version}' is UNAVAILABLE: {why}")
            raise ModelNotFound(f"model '{name}' has no version '{version}'; versions: {list(versions)}")
        return versions[version]

    def ready(self) -> tuple[bool, str]:
        """Whether this server can serve: at least one model loaded."""
        if self.models:
            return True, ""
        unavailable = [f"{entry['name']}/{entry['version']}: {entry['reason']}" for entry in self.index()]
        return False, "no model is loaded" + (f" ({'; '.join(unavailable)})" if unavailable else "")


def _claimed_service(folder: Path) -> str | None:
    """The service a card names, read leniently: a card too broken to say is listed by every server (its reason then
    tells what to fix), rather than by none."""
    try:
        fields = yaml.safe_load((folder / CARD_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    service = fields.get("service") if isinstance(fields, dict) else None
    return service if isinstance(service, str) else None
