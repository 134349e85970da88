"""The vision service behind its sidecar: images in as files and as OIP BYTES tensors, and bad images out."""

import struct
import zlib
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from .stack import Stack

pytestmark = pytest.mark.integration


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def drawn(text: str, size: tuple[int, int], scale: float, thickness: int) -> bytes:
    image = np.full(size, 255, np.uint8)
    cv2.putText(image, text, (10, size[0] - 20), cv2.FONT_HERSHEY_SIMPLEX, scale, 0, thickness)
    return png(image)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: a decompression bomb, without the pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def vision(stack: Stack, model_repository: Path) -> httpx.Client:
    sidecar, _ = stack.start_service("vision", model_repository, VISION_MAX_BODY_BYTES=str(2 * 1024 * 1024))
    base = f"{sidecar.url}/v1.0/invoke/{sidecar.app_id}/method"
    with httpx.Client(base_url=base, headers={"dapr-api-token": stack.dapr_api_token}, timeout=60) as client:
        client.sidecar_port = sidecar.http_port
        yield client


def test_image_files_in_json_out(vision: httpx.Client):
    assert vision.post("/digits", content=drawn("7", (80, 60), 2.2, 5)).json()["label"] == 7
    assert vision.post("/ocr", content=drawn("TANDEM 2026", (80, 420), 1.5, 3)).json()["text"] == "TANDEM 2026"
    faces = vision.post("/faces", content=png(np.full((200, 200, 3), 255, np.uint8))).json()
    assert faces == {"count": 0, "faces": []}
    verdict = vision.post("/nsfw", content=drawn("hello", (240, 240), 1.0, 2)).json()
    assert verdict["label"] == "sfw" and sum(verdict["probabilities"].values()) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json-base64", "binary"])
def test_digits_over_oip_with_tritonclient(vision: httpx.Client, stack: Stack, binary: bool):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{vision.sidecar_port}")
    headers = {"dapr-api-token": stack.dapr_api_token, "dapr-app-id": stack.app_id("vision")}
    images = [drawn(str(digit), (80, 60), 2.2, 5) for digit in (3, 8)]
    if binary:
        tensor = triton.InferInput("image", [2], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
    else:  # JSON carries BYTES as strings: images go base64-encoded
        import base64

        tensor = triton.InferInput("image", [2], "BYTES")
        tensor.set_data_from_numpy(
            np.array([base64.b64encode(image) for image in images], dtype=object), binary_data=False
        )
    result = client.infer("digits", [tensor], headers=headers)
    assert result.as_numpy("label").tolist() == [3, 8]
    assert result.as_numpy("probabilities").shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [
        ("empty", b"", 400, "empty"),
        ("random bytes", bytes(range(256)) * 4, 400, "not a readable"),
        ("truncated PNG", drawn("7", (80, 60), 2.2, 5)[:100], 400, "truncated"),
        ("decompression bomb", bomb_header(50_000, 50_000), 400, "too large"),
        ("over the body limit", b"\x89PNG" + b"\0" * (3 * 1024 * 1024), 413, "over the limit"),
    ],
)
def test_bad_images_get_a_clear_4xx_and_the_service_stays_ready(vision: httpx.Client, name, body, status, message):
    response = vision.post("/digits", content=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert vision.get("/v2/health/ready").status_code == 200
