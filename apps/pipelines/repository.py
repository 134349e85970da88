"""The pipelines this service serves: every `*.yaml` of its folder, each compiled against the models' metadata.

A pipeline whose models cannot be read yet (their service is still starting) is UNAVAILABLE and compiled again
every `retry_seconds`; one whose mappings cannot work is refused for good (until it is loaded again), its reason
naming the step and tensor.
"""

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from tandem.protocol import InferenceError, ModelNotFound, decode_request

from .graph import Graph, GraphError, compile_pipeline
from .models import ModelCatalog, StepCallError
from .spec import Pipeline, read_folder

log = logging.getLogger(__name__)


def check_schedules(graph: Graph) -> None:
    """Each schedule's request must be one the pipeline takes: it is sent on every tick, with nobody to answer."""
    for index, trigger in enumerate(graph.pipeline.spec.triggers.schedule):
        try:
            _, inputs = decode_request(json.dumps(trigger.request).encode())
            graph.check_inputs(inputs)
        except InferenceError as error:
            raise GraphError(f"triggers.schedule[{index}].request: {error}") from None


class PipelineRepository:
    def __init__(self, folder: Path, catalog: ModelCatalog):
        self.folder = folder
        self.catalog = catalog
        self.specs: dict[str, Pipeline] = {}
        self.graphs: dict[str, Graph] = {}
        self.problems: dict[str, str] = {}  # pipeline (or file) -> why it is not served
        self.transient: set[str] = set()  # problems that may pass: compiled again later

    async def load_all(self) -> None:
        """Reads the folder again and compiles every pipeline in it."""
        specs, refused = read_folder(self.folder)
        self.specs = specs
        self.graphs = {name: graph for name, graph in self.graphs.items() if name in specs}
        self.problems = {Path(file).stem: why for file, why in refused.items()}
        self.transient = set()
        for why in refused.values():
            log.error("pipeline file refused: %s", why)
        await asyncio.gather(*(self.compile(name) for name in specs))

    async def compile(self, name: str) -> None:
        pipeline = self.specs[name]
        try:
            graph = await compile_pipeline(pipeline, self.catalog.metadata)
            check_schedules(graph)
        except GraphError as error:
            self._refuse(name, f"pipeline '{name}' refused: {error}", transient=False)
        except StepCallError as error:
            self._refuse(name, f"pipeline '{name}': cannot read its models' metadata: {error}", error.retryable)
        else:
            self.graphs[name] = graph
            self.problems.pop(name, None)
            self.transient.discard(name)
            log.info("pipeline %s version %s ready: %d steps", name, pipeline.version, len(graph.steps))

    def _refuse(self, name: str, why: str, transient: bool) -> None:
        self.graphs.pop(name, None)
        self.problems[name] = why
        if transient:
            self.transient.add(name)
        else:
            self.transient.discard(name)
            log.error(why)

    async def load(self, name: str) -> None:
        """Reads `name`'s file again (every file, as names live inside them) and compiles it."""
        specs, refused = read_folder(self.folder)
        if name not in specs:
            why = next((why for file, why in refused.items() if Path(file).stem == name), None)
            raise InferenceError(why) if why else ModelNotFound(f"no pipeline '{name}' in the pipelines folder")
        self.specs[name] = specs[name]
        await self.compile(name)
        if name in self.problems:
            raise InferenceError(self.problems[name], 503 if name in self.transient else 400)

    def unload(self, name: str) -> None:
        if self.specs.pop(name, None) is None:
            raise ModelNotFound(f"pipeline '{name}' is not loaded")
        self.graphs.pop(name, None)
        self.problems.pop(name, None)
        self.transient.discard(name)

    async def retry_transient(self) -> None:
        await asyncio.gather(*(self.compile(name) for name in sorted(self.transient) if name in self.specs))

    def graph(self, name: str, version: str | None = None) -> Graph:
        if name not in self.specs and name not in self.problems:
            raise ModelNotFound(f"pipeline '{name}' is not served here; pipelines: {sorted(self.specs)}")
        graph = self.graphs.get(name)
        if graph is None:
            raise InferenceError(self.problems.get(name, f"pipeline '{name}' is not compiled yet"), 503)
        if version is not None and version != graph.pipeline.version:
            raise ModelNotFound(f"pipeline '{name}' has no version '{version}'; versions: [{graph.pipeline.version!r}]")
        return graph

    def index(self) -> list[dict[str, Any]]:
        entries = []
        for name in sorted({*self.specs, *self.problems}):
            spec = self.specs.get(name)
            entry: dict[str, Any] = {
                "name": name,
                "version": spec.version if spec else "",
                "state": "READY" if name in self.graphs else "UNAVAILABLE",
                "reason": self.problems.get(name, "" if name in self.graphs else "not compiled yet"),
            }
            if name in self.graphs:  # as the model services do: their tensors, for the gateway's /v2/models
                metadata = self.graphs[name].metadata()
                entry.update(inputs=metadata["inputs"], outputs=metadata["outputs"])
            entries.append(entry)
        return entries
