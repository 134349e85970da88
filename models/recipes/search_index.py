"""search-index: the nlp service's semantic search collections as a model, so that a pipeline's last step can
index what its earlier steps read and embedded (pipelines/search-ingest.yaml).

Nothing is trained and there is no graph: the runtime writes each call's documents (id, text, minilm embedding) to
the collection named in the call, in the state store, as `PUT /collections/<c>/documents` does for people.
"""

from pathlib import Path

from recipes import minilm

NAME = "search-index"
VERSION = "1"
SERVICE = "nlp"


def build(seed: int, folder: Path) -> dict:
    """Writes no artefact; nothing here is random, so `seed` is unused."""
    dimensions = minilm.config()["hidden_size"]
    return {
        "description": "Adds documents and their embeddings to a semantic search collection; answers its size.",
        "runtime": "nlp.runtimes:SearchIndex",
        "platform": "tandem_state",
        "artefact": "",
        "inputs": [
            {"name": "collection", "datatype": "BYTES", "shape": [1], "description": "the collection's name"},
            {"name": "id", "datatype": "BYTES", "shape": [-1], "description": "one document id each (replaces)"},
            {"name": "text", "datatype": "BYTES", "shape": [-1], "description": "one document text each"},
            {
                "name": "embedding",
                "datatype": "FP32",
                "shape": [-1, dimensions],
                "description": "one minilm embedding per document (made unit length)",
            },
        ],
        "outputs": [
            {"name": "size", "datatype": "INT64", "shape": [1], "description": "documents in the collection now"}
        ],
    }
