"""Text from a BYTES tensor: decoded as UTF-8 and checked before any tokeniser sees it."""

import numpy as np

from .protocol import InferenceError


def decode_texts(array: np.ndarray, name: str = "text") -> list[str]:
    """A BYTES tensor's elements as str: bytes must be UTF-8, str is taken as it is."""
    texts = []
    for index, item in enumerate(array.ravel()):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InferenceError(
                    f"{name}[{index}] is not valid UTF-8: {error.reason} at byte {error.start}"
                ) from None
        if not isinstance(item, str):
            raise InferenceError(f"{name}[{index}] must be a string, got {type(item).__name__}")
        texts.append(item)
    return texts


def check_texts(texts: list[str], max_characters: int, name: str = "text") -> None:
    """Refuses an empty batch, an empty text and a text longer than `max_characters`, naming the text's index.

    The character limit bounds the work one text can cause: past the model's token limit text is truncated, so most of
    a very long text would be ignored anyway.
    """
    if not texts:
        raise InferenceError(f"'{name}' holds no text; send at least one")
    for index, text in enumerate(texts):
        if not text.strip():
            raise InferenceError(f"{name}[{index}] is empty or only whitespace")
        if len(text) > max_characters:
            raise InferenceError(f"{name}[{index}] has {len(text)} characters; the limit is {max_characters}")
