"""Safe decoding of the encoded images (PNG, JPEG, WebP, BMP) that clients send as BYTES tensors.

Every failure is an `InferenceError` (HTTP 400) that says what was wrong with which image. An image
is refused before its pixels are decoded when its header claims more pixels than `MAX_PIXELS`: a
few hundred bytes of PNG can otherwise ask for gigabytes of memory (a decompression bomb).
"""

import base64
import binascii
from collections.abc import Callable
from io import BytesIO
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from tandem.protocol import InferenceError

T = TypeVar("T")

# 25 megapixels (e.g. 6000x4000) is more than any model here needs and far below Pillow's own
# bomb limit (Image.MAX_IMAGE_PIXELS, ~89 megapixels), so ours is always the one that applies.
MAX_PIXELS = 25_000_000
# Formats with small, well-exercised decoders; anything else (TIFF, PSD, EPS...) is refused.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")


def as_bytes(value: object) -> bytes:
    """The encoded image in a BYTES tensor element: raw bytes, or base64 text (JSON cannot carry raw bytes)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InferenceError("image text is not base64 of an encoded image") from None
    raise InferenceError(f"an image must be encoded bytes (PNG, JPEG, ...), got {type(value).__name__}")


def open_header(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image with only its header read (format and size, no pixels), refused if empty, unknown or too large."""
    if not data:
        raise InferenceError("image is empty (0 bytes)")
    try:
        image = Image.open(BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as error:  # Pillow's own limit, for headers far beyond ours
        raise InferenceError(f"image is too large to decode: {error}") from None
    except Exception:
        raise InferenceError(
            f"image is not a readable {', '.join(FORMATS)} file ({len(data)} bytes; unknown format or corrupted header)"
        ) from None
    width, height = image.size
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise InferenceError(f"image of {width}x{height} pixels is over the limit of {limit} pixels")
    return image


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decodes one image, upright (EXIF orientation applied), as RGB; transparency is laid on white."""
    image = open_header(data, max_pixels)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow's decoders raise many types for corrupted data.
        raise InferenceError(f"{image.format} image is corrupted or truncated: {error}") from None
    return _flatten(image)


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with transparent pixels white: a dark drawing on a transparent canvas must stay visible."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode(data: object, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One BYTES element as a uint8 array: HxWx3 RGB for mode "RGB", HxW for "L" (grayscale)."""
    image = open_image(as_bytes(data), max_pixels)
    return np.asarray(image if mode == "RGB" else image.convert(mode))


def _each(images: np.ndarray, function: Callable[[object], T]) -> list[T]:
    """`function` of every element of a BYTES tensor; an error names the image it is about."""
    elements = images.ravel()
    if elements.size == 0:
        raise InferenceError("no images: the image tensor is empty")
    results = []
    for index, element in enumerate(elements):
        try:
            results.append(function(element))
        except InferenceError as error:
            raise InferenceError(f"image {index} of {len(elements)}: {error}", error.status_code) from None
    return results


def check_all(images: np.ndarray, max_pixels: int = MAX_PIXELS) -> None:
    """Refuses a tensor holding an image that is empty, of an unknown format or too large, without decoding pixels.

    Cheap enough to run on every request before it joins a batch, so that one client's bad image is
    refused on its own rather than failing the batch it would have shared.
    """
    _each(images, lambda element: open_header(as_bytes(element), max_pixels))


def decode_all(images: np.ndarray, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> list[np.ndarray]:
    """Every image of a BYTES tensor, decoded."""
    return _each(images, lambda element: decode(element, mode, max_pixels))
