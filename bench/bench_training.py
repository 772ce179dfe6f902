"""Throughput of the SPD training step: CI forward and full training steps (steps/s, tokens/s).

Cases: TMS 5-2 (research config, batch 4096) and the `llama_mlp_vector` research fixture
(LlamaSimpleMLP, 16×32 tokens) and the bundled demo decomposition (built first if missing).
Each case also times the plain target forward as a reference in the same run, and (with
`--reference`) the training step with the CI functions' `ParallelLinear` computed by the plain
batched einsum, i.e. before its width-1 / shared-input fast paths. Wall time is noisy on a shared
box, so the per-step process CPU time is printed too (equal to wall time for one thread when idle).

    .venv/bin/python bench/bench_training.py [--steps N] [--threads T] [--reference]
"""

import argparse
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from spdlab.common.spd_config import Config, parse_config
from spdlab.core.ci_functions.blocks import ParallelLinear
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


def demo_case() -> tuple[str, Config, ComponentModel, Callable[[], Iterator[torch.Tensor]]]:
    """The bundled demo decomposition on windows of fresh demo stories (built first if missing)."""
    from spdlab.core.demo.build import load_demo
    from spdlab.core.demo.stories import corpus_text, generate_stories
    from spdlab.core.demo.tokenizer import encode_corpus
    from spdlab.core.demo.train_target import pack_windows

    loaded = load_demo()
    config, model = loaded.config, loaded.component_model
    model.target_model.requires_grad_(False)
    n_ctx = int(loaded.target_config.n_ctx)
    windows = pack_windows(encode_corpus(loaded.tokenizer, corpus_text(generate_stories(12345, 400))), n_ctx)

    def batches() -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        while True:
            yield windows[torch.randint(0, len(windows), (config.batch_size,), generator=g)]

    return "demo", config, model, batches


def einsum_parallel_linear(self: ParallelLinear, x: torch.Tensor) -> torch.Tensor:
    """The reference `ParallelLinear` forward: one batched einsum for every shape."""
    return torch.einsum("...ci,cio->...co", x, self.W) + self.b


def time_steps(config: Config, model: ComponentModel, make_batches: Callable[[], Iterator[torch.Tensor]],
               steps: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per training iteration, after a 2-step warm-up run."""
    def run(n: int) -> None:
        run_cfg = config.model_copy(update={"steps": n, "faithfulness_warmup_steps": 0, "train_log_freq": 10**9})
        decompose(run_cfg, model, make_batches(), None, progress=lambda *a: None, should_cancel=lambda: False,
                  on_log=lambda s, v: None, on_checkpoint=None)

    run(2)
    wall, cpu = time.perf_counter(), time.process_time()
    run(steps)
    return (time.perf_counter() - wall) / (steps + 1), (time.process_time() - cpu) / (steps + 1)


def bench(name: str, config: Config, model: ComponentModel, make_batches: Callable[[], Iterator[torch.Tensor]],
          steps: int, reference: bool) -> None:
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
    t_step, cpu_step = time_steps(config, model, make_batches, steps)
    print(f"{name}: batch {tuple(batch.shape)}, {tokens} positions/batch")
    print(f"  target forward (reference) {1 / t_target:9.1f} batches/s  {tokens / t_target:12.0f} pos/s")
    print(f"  target fwd + CI forward    {1 / t_ci:9.1f} batches/s  {tokens / t_ci:12.0f} pos/s")
    print(f"  training step              {1 / t_step:9.2f} steps/s    {tokens / t_step:12.0f} pos/s"
          f"  ({t_step / t_target:.0f}x a target forward; CPU {1e3 * cpu_step:.1f} ms/step)")
    if reference:
        fast_forward = ParallelLinear.forward
        ParallelLinear.forward = einsum_parallel_linear  # type: ignore[method-assign]
        try:
            t_ref, cpu_ref = time_steps(config, model, make_batches, steps)
        finally:
            ParallelLinear.forward = fast_forward  # type: ignore[method-assign]
        print(f"  step, einsum ParallelLinear {1 / t_ref:8.2f} steps/s    {tokens / t_ref:12.0f} pos/s"
              f"  (CPU {1e3 * cpu_ref:.1f} ms/step; fast paths {cpu_ref / cpu_step:.2f}x less CPU)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference", action="store_true", help="also time the einsum ParallelLinear")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32 CPU")
    cases = [tms_case(), lm_case(), demo_case()]
    for case in cases:
        bench(*case, steps=args.steps, reference=args.reference)


if __name__ == "__main__":
    main()
