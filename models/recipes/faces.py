"""faces: frontal faces in images with OpenCV's Haar cascade (Viola-Jones), as shipped in opencv-python-headless 4.x.

The cascade is copied into the model folder; opencv-python-headless 5.x no longer ships cascades.
"""

import hashlib
import shutil
from pathlib import Path

import cv2

NAME = "faces"
VERSION = "1"
SERVICE = "vision"
PACKAGES = ["opencv-python-headless", "pillow"]

CASCADE = "haarcascade_frontalface_default.xml"
# OpenCV's usual settings: a 10% scale step, five overlapping hits to accept a face, faces from 30 px.
DETECTION = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": [30, 30], "max_side": 1280}


def build(seed: int, folder: Path) -> dict:
    """Copies the cascade; there is nothing to train (the seed is unused)."""
    shutil.copyfile(Path(cv2.data.haarcascades) / CASCADE, folder / CASCADE)
    if cv2.CascadeClassifier(str(folder / CASCADE)).empty():
        raise ValueError(f"OpenCV cannot load {CASCADE}")
    return {
        "description": "Frontal faces in images: per image the boxes and their count (OpenCV Haar cascade).",
        "platform": "opencv_haarcascade",
        "artefact": CASCADE,
        "runtime": "vision.runtimes:FacesModel",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "content": "encoded PNG/JPEG/WebP/BMP"}],
        "outputs": [
            {"name": "boxes", "datatype": "BYTES", "shape": [-1], "content": "JSON list of {x, y, w, h} in pixels"},
            {"name": "count", "datatype": "INT64", "shape": [-1]},
        ],
        "preprocessing": (
            "grayscale, histogram equalised; images larger than max_side are searched scaled down "
            "(boxes are given in the original image's pixels)"
        ),
        "parameters": {"detection": DETECTION},
        "data": {
            "source": f"cv2.data.haarcascades/{CASCADE} (OpenCV {cv2.__version__})",
            "sha256": hashlib.sha256((folder / CASCADE).read_bytes()).hexdigest(),
        },
    }
