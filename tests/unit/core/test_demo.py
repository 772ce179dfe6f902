"""The bundled demo: story generator, tokenizer, a tiny end-to-end build, and (slow) the full build."""

import json
import re
import time
from pathlib import Path

import pytest
import torch

from spdlab.core.checkpoints import load_decomposition
from spdlab.core.demo.build import (
    DEMO_FILE,
    DemoRecipe,
    build_demo,
    cached_build,
    run_demo_recipe,
    save_demo,
)
from spdlab.core.demo.decompose_demo import DemoSpdSettings
from spdlab.core.demo.stories import (
    COLOURS,
    DEMO_PROMPTS,
    EOS,
    NAMES,
    OBJECTS,
    corpus_text,
    generate_stories,
)
from spdlab.core.demo.tokenizer import encode_corpus, load_tokenizer, save_tokenizer, train_tokenizer
from spdlab.core.demo.train_target import TargetTrainConfig
from spdlab.core.masks import make_mask_infos

# Tiny ops: on a shared CPU a second thread mostly spins (the build CLI also uses one).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = DemoRecipe(
    n_train_stories=300,
    n_eval_stories=40,
    target=TargetTrainConfig(n_embd=32, n_head=4, n_intermediate=64, n_ctx=32, steps=30, batch_size=8),
    spd=DemoSpdSettings(
        C={"mlp.c_fc": 8, "mlp.down_proj": 8, "attn.q_proj": 4, "attn.k_proj": 4, "attn.v_proj": 4,
           "attn.o_proj": 4},
        ci_hidden_dims=[8], steps=6, batch_size=2, faithfulness_warmup_steps=3,
    ),
    n_metric_windows=4,
)


# --- stories -------------------------------------------------------------------------------------


def test_stories_are_deterministic_per_seed() -> None:
    assert generate_stories(5, 40) == generate_stories(5, 40)
    assert [s.text for s in generate_stories(5, 40)] != [s.text for s in generate_stories(6, 40)]


def test_later_mentions_copy_the_introduced_bindings() -> None:
    n_refs = 0
    for story in generate_stories(11, 200):
        owner = {(c.colour, c.obj): c.name for c in story.characters}
        colour_of = {c.name: c.colour for c in story.characters}
        sentences = story.text.split(". ")
        intro = [f"{c.name} has a {c.colour} {c.obj}" for c in story.characters]
        assert sentences[: len(intro)] == intro
        for sentence in sentences[len(intro):]:
            for colour, obj in re.findall(r"the (\w+) (\w+)", sentence):
                if obj in OBJECTS:  # "go to the park" has no colour
                    assert (colour, obj) in owner, sentence
                    n_refs += 1
            if m := re.fullmatch(r"The (\w+) (\w+) belongs to (\w+)\.?", sentence):
                assert owner[(m[1], m[2])] == m[3]
            elif m := re.fullmatch(r"(\w+) \w+ the (\w+) \w+( to \w+)?\.?", sentence):
                assert colour_of[m[1]] == m[2], sentence
        assert story.text.endswith("The end.")
    assert n_refs >= 400  # every story refers back at least twice


def test_demo_prompts_use_the_story_vocabulary() -> None:
    words = set(" ".join(s.text for s in generate_stories(0, 500)).replace(".", " ").split())
    for prompt in DEMO_PROMPTS:
        assert set(prompt.replace(".", " ").split()) <= words, prompt
    assert set(NAMES) | set(COLOURS) | set(OBJECTS) <= words


# --- tokenizer -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([s.text for s in generate_stories(0, 600)], vocab_size=512)


def test_tokenizer_round_trips_and_keeps_story_words_whole(tokenizer) -> None:
    for text in [*DEMO_PROMPTS, "Zoë paints the 42 red kites ☃!"]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    for word in (*COLOURS, *OBJECTS):
        assert len(tokenizer.encode(f"Mia has a {word}").ids) == 4, word
    eos = tokenizer.token_to_id(EOS)
    ids = encode_corpus(tokenizer, corpus_text(generate_stories(1, 3)))
    assert int((ids == eos).sum()) == 3


def test_tokenizer_is_deterministic_and_saves(tokenizer, tmp_path: Path) -> None:
    again = train_tokenizer([s.text for s in generate_stories(0, 600)], vocab_size=512)
    assert again.to_str() == tokenizer.to_str()
    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert loaded.encode(DEMO_PROMPTS[0]).ids == tokenizer.encode(DEMO_PROMPTS[0]).ids


# --- builds --------------------------------------------------------------------------------------


def test_tiny_build_saves_a_checkpoint_that_reloads_identically(tmp_path: Path) -> None:
    loaded, info = run_demo_recipe(TINY)
    save_demo(tmp_path, loaded, info)
    saved = json.loads((tmp_path / DEMO_FILE).read_text())
    assert saved["recipe_hash"] == info["recipe_hash"]
    assert set(saved["wall_seconds"]) >= {"corpus", "tokenizer", "target", "decompose", "evaluate", "save"}
    assert set(saved["spd"]["l0"]) == {"0.1", "0.0"}
    assert saved["spd"]["sum_c"] == 2 * sum(TINY.spd.C.values())

    reloaded = load_decomposition(tmp_path)
    tok = reloaded.tokenizer
    assert tok is not None and tok.to_str() == loaded.tokenizer.to_str()
    ids = torch.tensor([tok.encode(DEMO_PROMPTS[0]).ids[:32]])
    a, b = loaded.component_model, reloaded.component_model
    with torch.no_grad():
        torch.testing.assert_close(b(ids), a(ids), rtol=0, atol=0)
        ci_a = a.calc_causal_importances(a(ids, cache_type="input").cache, "continuous").lower_leaky
        ci_b = b.calc_causal_importances(b(ids, cache_type="input").cache, "continuous").lower_leaky
        for path in a.target_module_paths:
            torch.testing.assert_close(ci_b[path], ci_a[path], rtol=0, atol=0)
        torch.testing.assert_close(b(ids, mask_infos=make_mask_infos(ci_b)), a(ids, mask_infos=make_mask_infos(ci_a)),
                                   rtol=0, atol=0)


def test_build_demo_reuses_a_matching_build(tmp_path: Path) -> None:
    build_demo(tmp_path, TINY)
    stamp = (tmp_path / DEMO_FILE).stat().st_mtime_ns
    stages: list[str] = []
    build_demo(tmp_path, TINY, progress=lambda c, t, s: stages.append(s))
    assert stages == [f"cached demo in {tmp_path}"]
    assert (tmp_path / DEMO_FILE).stat().st_mtime_ns == stamp
    other = TINY.model_copy(update={"corpus_seed": 1})
    assert cached_build(tmp_path, TINY) is not None and cached_build(tmp_path, other) is None


@pytest.mark.slow
def test_full_build_is_sparse(tmp_path: Path) -> None:
    start = time.perf_counter()
    build_demo(tmp_path, force=True, progress=lambda c, t, s: None)
    info = json.loads((tmp_path / DEMO_FILE).read_text())
    print(f"\nfull demo build: {time.perf_counter() - start:.0f}s, stages {info['wall_seconds']}")
    spd = info["spd"]
    print(f"L0@0.1 {spd['l0_total']['0.1']:.2f} of {spd['sum_c']}; KL ci_masked {spd['kl_ci_masked']:.3f}")
    l0 = spd["l0"]["0.1"]
    # A few alive components per module and position, a small fraction of all of them.
    assert spd["l0_total"]["0.1"] < 0.15 * spd["sum_c"]
    assert sum(l0.values()) / len(l0) < 5
    assert spd["kl_ci_masked"] < 0.1 * spd["kl_zero_masked"]
    # The target uses the context: it names a back-referenced object far above the 1-in-12 chance.
    assert info["target"]["copy_accuracy"]["object_after_the_colour"] > 0.25
