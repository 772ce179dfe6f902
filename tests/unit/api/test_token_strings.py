"""Token display strings rendered by the API (torch-free tokenizers)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from spdlab.api.tokenizer_cache import prompt_token_strings, token_strings

FIXTURE_TOKENIZER = Path(__file__).parents[2] / "fixtures" / "research_runs" / "llama_mlp_vector" / "target" / "tokenizer.json"


def test_word_level_prompt_matches_the_research_display():
    tok = Tokenizer.from_file(str(FIXTURE_TOKENIZER))
    ids = tok.encode("t88 t162 t119").ids
    assert prompt_token_strings(tok, ids) == ["t88", " t162", " t119"]
    assert token_strings(tok, ids) == ["t88", "t162", "t119"]


def test_byte_level_bpe_shows_spaces_not_internal_symbols():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["Mia has a red ball. Tom has a blue kite."] * 20,
                            trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = tok.encode("Mia has a red ball.").ids
    shown = prompt_token_strings(tok, ids)
    assert "".join(shown) == "Mia has a red ball."
    assert not any("Ġ" in s for s in shown + token_strings(tok, ids))


def test_without_a_tokenizer_ids_are_shown():
    assert prompt_token_strings(None, [3, 4]) == ["3", "4"] == token_strings(None, [3, 4])
