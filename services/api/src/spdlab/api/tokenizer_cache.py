"""Tokenizers of decompositions, loaded once per API process (torch-free `tokenizers`)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from tokenizers import Tokenizer

from spdlab.common.artifacts import ArtifactNotFoundError, ArtifactStore

MAX_TOKENIZERS = 32


class TokenizerCache:
    def __init__(self, artifacts: ArtifactStore, max_items: int = MAX_TOKENIZERS) -> None:
        self.artifacts = artifacts
        self.max_items = max_items
        self._items: OrderedDict[str, Tokenizer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ref: str | None) -> Tokenizer | None:
        """The tokenizer stored at artifact key `ref`; None when there is none."""
        if ref is None:
            return None
        with self._lock:
            tok = self._items.get(ref)
            if tok is not None:
                self._items.move_to_end(ref)
                return tok
        try:
            tok = Tokenizer.from_str(self.artifacts.get_bytes(ref).decode())
        except (ArtifactNotFoundError, FileNotFoundError):
            return None
        with self._lock:
            self._items[ref] = tok
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return tok


def token_strings(tok: Tokenizer | None, ids: list[int]) -> list[str]:
    """Display strings of single tokens (output candidates, vocabulary entries): each id decoded on
    its own, so byte-level BPE shows " ball" rather than its internal "Ġball"."""
    if tok is None:
        return [str(i) for i in ids]
    return [tok.decode([i], skip_special_tokens=False) or tok.id_to_token(i) or str(i) for i in ids]


def prompt_token_strings(tok: Tokenizer | None, ids: list[int]) -> list[str]:
    """Display strings of a token sequence: what each token adds to the decoded text, so spaces a
    decoder inserts between tokens show where they appear (" t162" after the first word)."""
    if tok is None:
        return [str(i) for i in ids]
    prefixes = [tok.decode(ids[:n], skip_special_tokens=False) for n in range(len(ids) + 1)]
    singles = token_strings(tok, ids)
    return [
        after[len(before):] if after.startswith(before) else single
        for before, after, single in zip(prefixes[:-1], prefixes[1:], singles, strict=True)
    ]
