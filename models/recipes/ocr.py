"""ocr: text in images with PP-OCRv4 (detection, recognition) and PP-OCR's orientation classifier.

The ONNX models ship inside rapidocr-onnxruntime; the service runs rapidocr's own pipeline on the
copies in the model folder, configured by the copy of rapidocr's config written beside them.
"""

import hashlib
import shutil
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import yaml
from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

from tandem.card import ModelCard
from vision.runtimes import OcrModel

NAME = "ocr"
VERSION = "1"
SERVICE = "vision"
PACKAGES = ["rapidocr-onnxruntime", "opencv-python-headless", "pillow", "pyclipper", "shapely"]

MODELS = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
}
CONFIG = "rapidocr.yaml"
KEYS = "ppocr_keys.txt"
SECTIONS = {"det": "Det", "cls": "Cls", "rec": "Rec"}

# Phrases drawn in OpenCV fonts for the card's read-back check.
WORDS = ["TANDEM", "Dapr", "sidecar", "invoice", "model", "vision", "Hello", "world", "2026", "42", "OCR", "batch"]
FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX]
PHRASES = 8


def package_file(*parts: str) -> Path:
    return Path(str(files("rapidocr_onnxruntime").joinpath(*parts)))


def write_config(folder: Path) -> None:
    """rapidocr's own settings, with each model path reduced to the file name of its copy in the folder."""
    config = yaml.safe_load(package_file("config.yaml").read_text())
    for role, section in SECTIONS.items():
        config[section]["model_path"] = MODELS[role]
    config["Rec"]["rec_keys_path"] = KEYS
    (folder / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def write_keys(folder: Path) -> int:
    """The recogniser's character dictionary, kept in its ONNX metadata, as the file rapidocr can also read."""
    session = ort.InferenceSession(str(folder / MODELS["rec"]), providers=["CPUExecutionProvider"])
    characters = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    (folder / KEYS).write_text("\n".join(characters) + "\n", encoding="utf-8")
    # Read back the way rapidocr reads it: the file must give exactly the embedded list.
    if CTCLabelDecode.read_character_file(folder / KEYS) != characters:
        raise ValueError("the character dictionary does not survive the round trip through a file")
    return len(characters)


def draw_phrase(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    text = " ".join(rng.choice(WORDS, size=2, replace=False))
    font, scale = FONTS[int(rng.integers(len(FONTS)))], float(rng.uniform(0.9, 1.6))
    (width, height), baseline = cv2.getTextSize(text, font, scale, 2)
    image = np.full((height + baseline + 40, width + 40, 3), 255, np.uint8)
    cv2.putText(image, text, (20, 20 + height), font, scale, (0, 0, 0), 2, cv2.LINE_AA)
    return text, image


def read_back(folder: Path, card: dict, seed: int) -> dict:
    """How many drawn phrases the built model reads back exactly (the service's own path, PNG included)."""
    model = OcrModel(folder, ModelCard.parse({"name": NAME, "version": VERSION, **card}, NAME), intra_op_threads=1)
    rng = np.random.default_rng(seed)
    exact = 0
    for _ in range(PHRASES):
        text, image = draw_phrase(rng)
        png = cv2.imencode(".png", image)[1].tobytes()
        read = model.predict({"image": np.array([png], dtype=object)})["text"][0]
        exact += " ".join(read.split()) == text
    return {"drawn_phrases": PHRASES, "drawn_phrases_read_exactly": exact}


def build(seed: int, folder: Path) -> dict:
    """Copies the three ONNX models and writes rapidocr's config and the character dictionary beside them."""
    for name in MODELS.values():
        shutil.copyfile(package_file("models", name), folder / name)
    characters = write_keys(folder)
    write_config(folder)
    card = {
        "description": "Text in images (PP-OCRv4 detection and recognition, Chinese and English, with digits).",
        "runtime": "vision.runtimes:OcrModel",
        "artefact": CONFIG,
        "artefacts": {**MODELS, "config": CONFIG, "keys": KEYS},
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "content": "encoded PNG/JPEG/WebP/BMP"}],
        "outputs": [
            {"name": "text", "datatype": "BYTES", "shape": [-1], "content": "lines in reading order"},
            {
                "name": "lines",
                "datatype": "BYTES",
                "shape": [-1],
                "content": "JSON list of {text, score, box: [[x, y] x4, clockwise from top left]}",
            },
        ],
        "preprocessing": "rapidocr's pipeline and settings (rapidocr.yaml): detect, crop, orientation, recognise",
        "data": {
            "source": "PP-OCR ONNX models shipped in rapidocr-onnxruntime",
            "sha256": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in MODELS.values()},
            "characters": characters,
        },
    }
    card["metrics"] = read_back(folder, card, seed)
    return card
