"""Text to model input: checks each text, then WordPiece-tokenises a batch into BERT's int64 tensors."""

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tandem.text import check_texts

MAX_TOKENS = 128  # what the text models were trained on; longer text is truncated
# Bounds the work one text can cause. Text past MAX_TOKENS (roughly 500 characters of English) is
# still truncated; beyond this it is refused, since most of it would be ignored.
MAX_CHARACTERS = 2000


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

    def encode(self, texts: list[str], name: str = "text") -> dict[str, np.ndarray]:
        """input_ids and attention_mask, int64 [len(texts), longest text in tokens]."""
        check_texts(texts, self.max_characters, name)
        encodings = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([encoding.ids for encoding in encodings], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64),
        }
