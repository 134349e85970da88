"""Helpers the recipes share (not a recipe: build.py skips modules whose name starts with '_')."""

from pathlib import Path
from typing import Any

import onnx
from onnx import helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType


def onnx_bytes(graph: onnx.ModelProto) -> bytes:
    """The serialised model, its opset imports sorted by domain.

    skl2onnx lists the domains in set order, which follows Python's per-process string hashing: without sorting, a
    model that uses two domains (ai.onnx and ai.onnx.ml) would not serialise to the same bytes twice.
    """
    opsets = sorted({(opset.domain, opset.version) for opset in graph.opset_import})
    del graph.opset_import[:]
    graph.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    return graph.SerializeToString()


def write_sklearn_onnx(model: Any, name: str, features: int, folder: Path, **options: Any) -> None:
    """Converts a scikit-learn model whose one input is `input`, FP32 [rows, features], into folder/model.onnx.

    `options` go to skl2onnx's convert_sklearn (final_types, options such as zipmap off).
    """
    graph = convert_sklearn(model, name, initial_types=[("input", FloatTensorType([None, features]))], **options)
    (folder / "model.onnx").write_bytes(onnx_bytes(graph))
