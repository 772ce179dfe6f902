"""Byte-level BPE tokenizer for the demo stories (Hugging Face `tokenizers`).

Byte-level so that any prompt a user types encodes (no unknown token); the vocabulary cap is large
enough for every story word to become a single token, which keeps attribution graphs readable.
Spaces belong to the following word (`" ball"`), as in GPT-2; a story's first word follows the
end-of-text token and has no leading space, like a prompt's first word.
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from spdlab.core.demo.stories import EOS


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    """Train a byte-level BPE on `texts`; deterministic for the same texts and size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def eos_id(tok: Tokenizer) -> int:
    """Id of the end-of-text token (also used as beginning-of-text)."""
    idx = tok.token_to_id(EOS)
    if idx is None:
        raise ValueError(f"tokenizer has no {EOS!r} token")
    return idx


def encode_corpus(tok: Tokenizer, texts: list[str]) -> torch.Tensor:
    """All texts encoded (batched, in the Rust backend) and concatenated into one 1-D long tensor."""
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    tok.save(str(path))


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))
