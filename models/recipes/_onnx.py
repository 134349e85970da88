"""Helpers the recipes share (not a recipe: build.py skips modules whose name starts with '_')."""

import onnx
from onnx import helper


def onnx_bytes(graph: onnx.ModelProto) -> bytes:
    """The serialised model, its opset imports sorted by domain.

    skl2onnx lists the domains in set order, which follows Python's per-process string hashing: without sorting, a
    model that uses two domains (ai.onnx and ai.onnx.ml) would not serialise to the same bytes twice.
    """
    opsets = sorted({(opset.domain, opset.version) for opset in graph.opset_import})
    del graph.opset_import[:]
    graph.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    return graph.SerializeToString()
