"""Throughput of the SPD training step: CI forward and full training steps (steps/s, tokens/s).

Cases: TMS 5-2 (research config, batch 4096) and the `llama_mlp_vector` research fixture
(LlamaSimpleMLP, 16×32 tokens); plus a demo decomposition when `spdlab.core.demo` provides one.
Each case also times the plain target forward as a reference in the same run.

    .venv/bin/python bench/bench_training.py [--steps N] [--threads T]
"""

import argparse
import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from spdlab.common.spd_config import Config, parse_config
from spdlab.core.component_model import ComponentModel, OutputWithCache, build_component_model
from spdlab.core.data.sparse_features import sparse_feature_batches
from spdlab.core.targets.tms import TMSModel, TMSModelConfig
from spdlab.core.training import decompose

RUNS = Path(__file__).parents[1] / "tests" / "fixtures" / "research_runs"


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def tms_case() -> tuple[str, Config, ComponentModel, Callable[[], Iterator[torch.Tensor]]]:
    run = RUNS / "tms_5-2"
    config = parse_config(yaml.safe_load((run / "final_config.yaml").read_text()))
    model_cfg = yaml.safe_load((run / "target" / "tms_train_config.yaml").read_text())["tms_model_config"]
    target = TMSModel(TMSModelConfig(**model_cfg))
    target.load_state_dict(torch.load(run / "target" / "tms.pth", weights_only=True))
    model = build_component_model(target.requires_grad_(False), config)
    batches = lambda: sparse_feature_batches(  # noqa: E731
        "at_least_zero_active", config.batch_size, 5, 0.05, (0.0, 1.0), seed=0
    )
    return "tms_5-2", config, model, batches


def lm_case() -> tuple[str, Config, ComponentModel, Callable[[], Iterator[torch.Tensor]]]:
    from spdlab.core.research_import import import_research_run

    loaded = import_research_run(RUNS / "llama_mlp_vector")
    config = loaded.config.model_copy(update={"autocast_bf16": False})
    model = loaded.component_model
    model.target_model.requires_grad_(False)
    vocab = model.target_model.get_submodule("wte").num_embeddings

    def batches() -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        while True:
            yield torch.randint(0, vocab, (config.batch_size, 32), generator=g)

    return "llama_mlp_vector", config, model, batches


def demo_case() -> tuple[str, Config, ComponentModel, Callable[[], Iterator[torch.Tensor]]] | None:
    """A demo decomposition, if the demo package offers `bench_case()` (skipped otherwise)."""
    try:
        demo = importlib.import_module("spdlab.core.demo")
    except ImportError:
        return None
    factory = getattr(demo, "bench_case", None)
    return factory() if factory is not None else None


def bench(name: str, config: Config, model: ComponentModel, make_batches: Callable[[], Iterator[torch.Tensor]],
          steps: int) -> None:
    batch = next(make_batches())
    tokens = batch.numel() if batch.dtype == torch.long else batch.shape[0]
    repeats = max(3, steps // 2)
    with torch.no_grad():
        t_target = timed(lambda: model(batch), repeats)

        def ci_forward() -> None:
            out = model(batch, cache_type="input")
            assert isinstance(out, OutputWithCache)
            model.calc_causal_importances(out.cache, sampling=config.sampling)

        t_ci = timed(ci_forward, repeats)
    run_cfg = config.model_copy(update={"steps": steps, "faithfulness_warmup_steps": 0, "train_log_freq": 10**9})
    started = time.perf_counter()
    decompose(run_cfg, model, make_batches(), None, progress=lambda *a: None, should_cancel=lambda: False,
              on_log=lambda s, v: None, on_checkpoint=None)
    t_step = (time.perf_counter() - started) / (steps + 1)
    print(f"{name}: batch {tuple(batch.shape)}, {tokens} positions/batch")
    print(f"  target forward (reference) {1 / t_target:9.1f} batches/s  {tokens / t_target:12.0f} pos/s")
    print(f"  target fwd + CI forward    {1 / t_ci:9.1f} batches/s  {tokens / t_ci:12.0f} pos/s")
    print(f"  training step              {1 / t_step:9.2f} steps/s    {tokens / t_step:12.0f} pos/s"
          f"  ({t_step / t_target:.0f}x a target forward)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32 CPU")
    cases = [tms_case(), lm_case()]
    if (demo := demo_case()) is not None:
        cases.append(demo)
    else:
        print("(no demo decomposition: spdlab.core.demo has no bench_case; skipped)")
    for case in cases:
        bench(*case, steps=args.steps)


if __name__ == "__main__":
    main()
