"""Build (or reuse) the bundled demo: stories → tokenizer → target → SPD → checkpoint + demo.json.

`python -m spdlab.core.demo.build --out DIR [--force] [--threads N]`. A directory whose `demo.json`
carries the same recipe hash is reused as is; `demo.json` is written last, so an interrupted build
is never mistaken for a finished one.
"""

import argparse
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel, no_progress
from spdlab.core.checkpoints import MANIFEST_FILE, load_decomposition, save_decomposition
from spdlab.core.demo.decompose_demo import DemoSpdSettings, decompose_target, demo_spd_config
from spdlab.core.demo.evaluate import copy_accuracy, decomposition_metrics
from spdlab.core.demo.stories import COLOURS, DEMO_PROMPTS, OBJECTS, corpus_text, generate_stories
from spdlab.core.demo.tokenizer import encode_corpus, train_tokenizer
from spdlab.core.demo.train_target import TargetTrainConfig, llama_config, pack_windows, train_target
from spdlab.core.research_import import LoadedDecomposition, SourceInfo

# Bump when code changes would change the build's output for the same recipe.
RECIPE_VERSION = 1
DEMO_FILE = "demo.json"


class DemoRecipe(BaseModel):
    """Everything that determines the demo build; its hash keys the cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus_seed: int = 0
    n_train_stories: int = 20000
    n_eval_stories: int = 400
    vocab_size: int = 512
    target: TargetTrainConfig = TargetTrainConfig()
    spd: DemoSpdSettings = DemoSpdSettings()
    n_metric_windows: int = 128


def recipe_hash(recipe: DemoRecipe) -> str:
    payload = json.dumps({"version": RECIPE_VERSION, "recipe": recipe.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_demo_dir() -> Path:
    return Path(os.environ.get("SPDLAB_DATA_DIR", "./var")) / "demo"


def cached_build(directory: Path, recipe: DemoRecipe) -> dict | None:
    """The finished build's `demo.json` when `directory` holds one for this recipe, else None."""
    path = directory / DEMO_FILE
    if not path.is_file() or not (directory / MANIFEST_FILE).is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return info if info.get("recipe_hash") == recipe_hash(recipe) else None


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock so that two processes never build into the same directory at once."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Timer:
    def __init__(self, progress: ProgressFn):
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(0, 1, name)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self.progress(1, 1, f"{name} done in {self.seconds[name]:.1f}s")


def run_demo_recipe(
    recipe: DemoRecipe, *, progress: ProgressFn = no_progress, should_cancel: CancelFn | None = None
) -> tuple[LoadedDecomposition, dict]:
    """Run every stage in memory: the decomposition (not yet saved) and the `demo.json` content."""
    timer = _Timer(progress)
    started = time.perf_counter()
    n_ctx = recipe.target.n_ctx
    with timer.stage("corpus"):
        train_stories = generate_stories(recipe.corpus_seed, recipe.n_train_stories)
        eval_stories = generate_stories(recipe.corpus_seed + 1, recipe.n_eval_stories)
    with timer.stage("tokenizer"):
        # The end-of-text token is special; training on raw story texts keeps merges for words only.
        tok = train_tokenizer([s.text for s in train_stories], recipe.vocab_size)
        train_windows = pack_windows(encode_corpus(tok, corpus_text(train_stories)), n_ctx)
        eval_windows = pack_windows(encode_corpus(tok, corpus_text(eval_stories)), n_ctx)
    check_cancel(should_cancel)
    with timer.stage("target"):
        trained = train_target(
            recipe.target, train_windows, eval_windows, tok.get_vocab_size(),
            progress=progress, should_cancel=should_cancel,
        )
        word_ids = lambda words: torch.tensor([tok.token_to_id(f"Ġ{w}") for w in words])  # noqa: E731
        copy = copy_accuracy(trained.model, eval_windows, tok.token_to_id("Ġthe"), word_ids(COLOURS),
                             word_ids(OBJECTS))
    config = demo_spd_config(recipe.spd, n_ctx)
    with timer.stage("decompose"):
        cm, result = decompose_target(
            trained.model, config, train_windows, progress=lambda c, t, s: progress(c, t, f"spd {s}"),
            should_cancel=should_cancel or (lambda: False),
        )
    with timer.stage("evaluate"):
        metrics = decomposition_metrics(cm, eval_windows[: recipe.n_metric_windows])
    loaded = LoadedDecomposition(
        config=config, component_model=cm, target_model_type="LlamaSimpleMLP",
        target_config=llama_config(recipe.target, tok.get_vocab_size()), tokenizer=tok,
        source=SourceInfo(kind="demo", path="spdlab.core.demo", extra={"recipe_hash": recipe_hash(recipe)}),
        tokenizer_json=tok.to_str(),
    )
    return loaded, {
        "format": "spdlab-demo",
        "recipe_version": RECIPE_VERSION,
        "recipe_hash": recipe_hash(recipe),
        "recipe": recipe.model_dump(mode="json"),
        "prompts": list(DEMO_PROMPTS),
        "corpus": {"vocab_size": tok.get_vocab_size(), "n_train_windows": int(train_windows.shape[0]),
                   "n_eval_windows": int(eval_windows.shape[0]), "n_ctx": n_ctx},
        "target": {"eval_loss": trained.eval_loss, "final_train_loss": trained.final_train_loss,
                   "copy_accuracy": copy.model_dump()},
        "spd": {**metrics.model_dump(), "final_train_log": result.last_train_log},
        "wall_seconds": {**timer.seconds, "total": round(time.perf_counter() - started, 2)},
        "torch_threads": torch.get_num_threads(),
    }


def build_demo(
    directory: Path | None = None,
    recipe: DemoRecipe | None = None,
    *,
    force: bool = False,
    progress: ProgressFn = no_progress,
    should_cancel: CancelFn | None = None,
    num_threads: int | None = 1,
) -> Path:
    """Build the demo into `directory` unless a build of the same recipe is already there.

    One torch thread by default: these ops are tiny, and on a shared CPU extra threads mostly spin.
    """
    directory = Path(directory) if directory is not None else default_demo_dir()
    recipe = recipe or DemoRecipe()
    with _dir_lock(directory):
        if not force and cached_build(directory, recipe) is not None:
            progress(1, 1, f"cached demo in {directory}")
            return directory
        (directory / DEMO_FILE).unlink(missing_ok=True)
        with _torch_threads(num_threads):
            loaded, info = run_demo_recipe(recipe, progress=progress, should_cancel=should_cancel)
        save_demo(directory, loaded, info)
    return directory


def save_demo(directory: Path, loaded: LoadedDecomposition, info: dict) -> None:
    """Checkpoint files first, `demo.json` (the completion marker) last."""
    start = time.perf_counter()
    save_decomposition(loaded, directory)
    info = {**info, "wall_seconds": {**info["wall_seconds"], "save": round(time.perf_counter() - start, 2)}}
    (directory / DEMO_FILE).write_text(json.dumps(info, indent=2))


def ensure_demo(directory: Path | str | None = None, progress: ProgressFn | None = None) -> Path:
    """The demo checkpoint directory, building it first if needed (minutes, once)."""
    return build_demo(None if directory is None else Path(directory), progress=progress or no_progress)


def load_demo(directory: Path | str | None = None, *, device: str | torch.device = "cpu") -> LoadedDecomposition:
    """The demo decomposition, loaded (and built first if needed) — for benchmarks and notebooks."""
    return load_decomposition(ensure_demo(directory), device=device)


def print_progress(current: int, total: int, stage: str) -> None:
    """CLI progress: stage boundaries and the target/SPD loops every 50 steps."""
    if total <= 1 or current % 50 == 0 or current == total:
        print(f"[demo] {stage} {current}/{total}" if total > 1 else f"[demo] {stage}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the bundled spdlab demo decomposition.")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default $SPDLAB_DATA_DIR/demo)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    out = build_demo(args.out, force=args.force, progress=print_progress, num_threads=args.threads)
    info = json.loads((out / DEMO_FILE).read_text())
    print(json.dumps({k: info[k] for k in ("recipe_hash", "wall_seconds")} | {
        "target_eval_loss": info["target"]["eval_loss"],
        "l0_total": info["spd"]["l0_total"], "sum_c": info["spd"]["sum_c"],
        "kl_ci_masked": info["spd"]["kl_ci_masked"], "kl_unmasked": info["spd"]["kl_unmasked"],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
