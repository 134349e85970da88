"""Text to model input: checks each text, then WordPiece-tokenises a batch into BERT's int64 tensors."""

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tandem.protocol import InferenceError

MAX_TOKENS = 128  # what the text models were trained on; longer text is truncated
# Bounds the work one text can cause. Text past MAX_TOKENS (roughly 500 characters of English) is
# still truncated; beyond this it is refused, since most of it would be ignored.
MAX_CHARACTERS = 2000


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


class TextTokeniser:
    """tokenizer.json with truncation and padding set here, whatever the file says.

    The file may pad every text to a fixed length; padding to the longest text in the batch does
    less work and, because padding is masked out, gives the same embeddings.
    """

    def __init__(self, path: Path, max_tokens: int = MAX_TOKENS, max_characters: int = MAX_CHARACTERS):
        self.max_characters = max_characters
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.enable_truncation(max_length=max_tokens, strategy="longest_first")
        pad_token = "[PAD]"
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(pad_token), pad_token=pad_token, length=None)

    def check(self, texts: list[str], name: str = "text") -> None:
        if not texts:
            raise InferenceError(f"'{name}' holds no text; send at least one")
        for index, text in enumerate(texts):
            if not text.strip():
                raise InferenceError(f"{name}[{index}] is empty or only whitespace")
            if len(text) > self.max_characters:
                raise InferenceError(f"{name}[{index}] has {len(text)} characters; the limit is {self.max_characters}")

    def encode(self, texts: list[str], name: str = "text") -> dict[str, np.ndarray]:
        """input_ids and attention_mask, int64 [len(texts), longest text in tokens]."""
        self.check(texts, name)
        encodings = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([encoding.ids for encoding in encodings], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64),
        }
