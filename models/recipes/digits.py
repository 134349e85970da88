"""digits: which digit (0-9) an image shows, from scikit-learn's bundled digits plus digits drawn with OpenCV fonts.

scikit-learn's digits are 8x8 counts of ink (0..16) from handwriting. A model trained on them
alone misreads printed digits (about 6 in 10 right on the drawn test set), so the training set adds
digits drawn with OpenCV's fonts under seeded jitter (scale, thickness, offset, rotation, italics,
polarity), each reduced to 8x8 by the same `digit_features` the service applies to user images.
"""

import hashlib
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from recipes._onnx import write_sklearn_onnx
from vision.runtimes import DIGIT_GRID, digit_features

NAME = "digits"
VERSION = "1"
SERVICE = "vision"
PACKAGES = ["opencv-python-headless", "pillow"]

FONTS = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "plain": cv2.FONT_HERSHEY_PLAIN,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
    "complex_small": cv2.FONT_HERSHEY_COMPLEX_SMALL,
    "script_simplex": cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    "script_complex": cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
}
# The small fonts are drawn at a larger scale so that every font comes out at a similar size.
FONT_SCALE = {"plain": 2.0, "complex_small": 1.6}
DRAWN_PER_DIGIT = 320  # 40 per font
CANVAS = 96
TEST_SIZE = 0.25
FEATURES = DIGIT_GRID * DIGIT_GRID


def draw_digit(rng: np.random.Generator, digit: int, font: str) -> np.ndarray:
    """One digit as a grayscale image: dark on white, or (half the time) light on black."""
    canvas = np.full((CANVAS, CANVAS), 255, np.uint8)
    scale = rng.uniform(1.5, 3.0) * FONT_SCALE.get(font, 1.0)
    thickness = int(rng.integers(1, 9))
    face = FONTS[font] | (cv2.FONT_ITALIC if rng.random() < 0.3 else 0)
    (width, height), _ = cv2.getTextSize(str(digit), face, scale, thickness)
    origin = ((CANVAS - width) // 2 + int(rng.integers(-8, 9)), (CANVAS + height) // 2 + int(rng.integers(-8, 9)))
    cv2.putText(canvas, str(digit), origin, face, scale, 0, thickness, cv2.LINE_AA)
    turn = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), rng.uniform(-12, 12), 1.0)
    canvas = cv2.warpAffine(canvas, turn, (CANVAS, CANVAS), borderValue=255)
    return 255 - canvas if rng.random() < 0.5 else canvas


def drawn_digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the drawn digits, every font equally often for every digit."""
    rng = np.random.default_rng(seed)
    fonts = list(FONTS)
    features, labels = [], []
    for digit in range(10):
        for index in range(DRAWN_PER_DIGIT):
            features.append(digit_features(draw_digit(rng, digit, fonts[index % len(fonts)])))
            labels.append(digit)
    return np.array(features, np.float32), np.array(labels, np.int64)


def split(seed: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Train/test splits of both sources: {"sklearn": (x_train, x_test, y_train, y_test), "drawn": (...)}."""
    bundled = load_digits()
    sources = {"sklearn": (bundled.data.astype(np.float32), bundled.target), "drawn": drawn_digits(seed)}
    return {
        name: tuple(train_test_split(x, y, test_size=TEST_SIZE, random_state=seed, stratify=y))
        for name, (x, y) in sources.items()
    }


def train(seed: int, splits: dict[str, tuple[np.ndarray, ...]] | None = None) -> MLPClassifier:
    splits = splits or split(seed)
    x_train = np.vstack([splits[name][0] for name in splits])
    y_train = np.concatenate([splits[name][2] for name in splits])
    model = MLPClassifier(hidden_layer_sizes=(256, 128), alpha=1e-3, max_iter=400, random_state=seed)
    return model.fit(x_train, y_train)


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx (8x8 features -> label, probabilities); the runtime class turns images into features."""
    splits = split(seed)
    model = train(seed, splits)
    write_sklearn_onnx(model, NAME, FEATURES, folder, options={id(model): {"zipmap": False}})
    bundled = load_digits()
    return {
        "description": "The digit (0-9) an image shows: handwritten or printed, dark on light or light on dark.",
        "runtime": "vision.runtimes:DigitsModel",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "content": "encoded PNG/JPEG/WebP/BMP"}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ],
        "labels": [str(digit) for digit in range(10)],
        # model.onnx alone, for clients that compute the 8x8 features themselves.
        "parameters": {
            "tensor_interface": {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}],
                "outputs": [
                    {"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                ],
            }
        },
        "preprocessing": (
            "grayscale; Otsu threshold, the side that fills the border is background; crop to the ink; "
            "scale the longer side to 32 px keeping the aspect ratio, centred in 32x32; "
            "mean of each 4x4 block x16 -> 8x8 values 0..16 (scikit-learn's digits representation)"
        ),
        "metrics": {
            "sklearn_test_accuracy": round(float(model.score(splits["sklearn"][1], splits["sklearn"][3])), 4),
            "sklearn_test_images": len(splits["sklearn"][3]),
            "drawn_test_accuracy": round(float(model.score(splits["drawn"][1], splits["drawn"][3])), 4),
            "drawn_test_images": len(splits["drawn"][3]),
            "test_size": TEST_SIZE,
        },
        "data": {
            "source": "sklearn.datasets.load_digits + digits drawn with OpenCV Hershey fonts",
            "sklearn_sha256": hashlib.sha256(bundled.data.tobytes() + bundled.target.tobytes()).hexdigest(),
            "drawn": {"fonts": list(FONTS), "per_digit": DRAWN_PER_DIGIT, "canvas": CANVAS},
        },
    }
