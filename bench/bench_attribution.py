"""Attribution-graph compute time: batched backward (spdlab) vs one backward per target node.

Prints, per prompt length, nodes, edges, both times, their ratio, edges/s and the max |difference|
between the two edge sets (both paths run in the same process on the same inputs); then CI
optimization steps/s.

Models: `demo` (the bundled demo decomposition, context 128; built first if missing), `fixture`
(the research-code Llama fixture run; its context is 32, so lengths are capped at 32) and `random`
(a random LlamaSimpleMLP decomposition with context 128 and a given number of alive components per
layer and position, so longer prompts can be measured).

    .venv/bin/python bench/bench_attribution.py --model random --lengths 16 64 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "unit" / "core"))

from attribution_reference import reference_edges  # noqa: E402

from spdlab.common.spd_config import LayerwiseCiConfig  # noqa: E402
from spdlab.core.attribution import AttributionConfig, compute_attribution_graph  # noqa: E402
from spdlab.core.component_model import ComponentModel  # noqa: E402
from spdlab.core.gradient_connectivity import sources_by_target_concrete  # noqa: E402
from spdlab.core.optimize_ci import LRSchedule, OptimizeCIConfig, optimize_ci  # noqa: E402
from spdlab.core.prompt_losses import CELoss  # noqa: E402
from spdlab.core.targets import LlamaSimpleMLP, LlamaSimpleMLPConfig  # noqa: E402
from spdlab.core.topology import TransformerTopology  # noqa: E402


def load_demo(build: bool) -> tuple[ComponentModel, int] | None:
    """The bundled demo decomposition (built first when `build`, which takes minutes), else None."""
    from spdlab.core.checkpoints import load_decomposition
    from spdlab.core.demo.build import DemoRecipe, cached_build, default_demo_dir, ensure_demo

    directory = default_demo_dir()
    if cached_build(directory, DemoRecipe()) is None:
        if not build:
            return None
        ensure_demo(directory)
    model = load_decomposition(directory).component_model
    return model, int(model.target_model.config.n_ctx)


def load_fixture() -> tuple[ComponentModel, int]:
    from spdlab.core.research_import import import_research_run

    loaded = import_research_run(REPO / "tests" / "fixtures" / "research_runs" / "llama_mlp_vector")
    return loaded.component_model, 32


def random_model(d_model: int = 64, n_layer: int = 2, c: int = 48, ctx: int = 128) -> tuple[ComponentModel, int]:
    torch.manual_seed(0)
    cfg = LlamaSimpleMLPConfig(
        vocab_size=512, n_layer=n_layer, n_head=4, n_embd=d_model, n_intermediate=4 * d_model, block_size=ctx,
        n_ctx=ctx, n_key_value_heads=4, rotary_dim=d_model // 4, rms_norm_eps=1e-5,
    )
    target = LlamaSimpleMLP(cfg)
    with torch.no_grad():
        for p in target.parameters():
            p.normal_(0, 1 / d_model**0.5)
    target.requires_grad_(False)
    module_to_c = {}
    for i in range(n_layer):
        module_to_c |= {f"h.{i}.mlp.c_fc": c, f"h.{i}.mlp.down_proj": c}
        module_to_c |= {f"h.{i}.attn.{p}_proj": c for p in "qkvo"}
    model = ComponentModel(target, module_to_c, LayerwiseCiConfig(fn_type="vector_mlp", hidden_dims=[8]),
                           "leaky_hard", "idx_0")
    return model, ctx


def sparse_ci(model: ComponentModel, seq: int, alive_per_pos: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """CI with exactly `alive_per_pos` alive components per (layer, position)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for path, c in model.module_to_c.items():
        keep = torch.rand(seq, c, generator=gen).argsort(-1) < alive_per_pos
        out[path] = torch.rand(seq, c, generator=gen).clamp_min(0.05) * keep
    return out


def bench_graph(model: ComponentModel, length: int, alive: int | None, brute: bool) -> None:
    topology = TransformerTopology(model.target_model, model.target_module_paths)
    sbt = sources_by_target_concrete(model, topology)
    vocab = model.target_model.lm_head.out_features
    tokens = torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(length))
    ci = None if alive is None else sparse_ci(model, length, alive)
    config = AttributionConfig()

    def fast():
        return compute_attribution_graph(model, tokens, topology=topology, sources_by_target=sbt,
                                         sampling="continuous", ci_lower=ci, config=config)

    fast()  # warm-up (first batched backward pays a one-off vmap set-up)
    t0 = time.perf_counter()
    graph = fast()
    t_fast = time.perf_counter() - t0
    n_edges = len(graph.edges)
    line = (f"S={length:4d} nodes={len(graph.nodes):6d} edges={n_edges:8d} batched={t_fast:7.2f}s "
            f"({n_edges / t_fast:,.0f} edges/s)")
    if brute:
        alive_masks = {p: torch.zeros(length, c, dtype=torch.bool) for p, c in model.module_to_c.items()}
        outputs = []
        for layer, pos, idx in zip(graph.nodes.layer.tolist(), graph.nodes.pos.tolist(),
                                   graph.nodes.index.tolist(), strict=True):
            name = graph.layer_names[layer]
            if name == "output":
                outputs.append((pos, idx))
            elif name != "embed":
                alive_masks[topology.canon_to_target(name)][pos, idx] = True
        t0 = time.perf_counter()
        ref = reference_edges(model, tokens, topology, sbt, alive_masks, outputs, length)
        t_brute = time.perf_counter() - t0
        mine = graph.edge_dict()
        err = max(abs(mine[k] - v) for k, v in ref.items()) if ref else 0.0
        line += (f" brute={t_brute:7.2f}s ({n_edges / t_brute:,.0f} edges/s) ratio={t_brute / t_fast:5.1f}x "
                 f"same_edges={set(ref) == set(mine)} max_abs_diff={err:.2e}")
    print(line, flush=True)


def bench_optimize(model: ComponentModel, length: int, batch: int, mask_type: str, steps: int) -> None:
    vocab = model.target_model.lm_head.out_features
    tokens = torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(1))
    config = OptimizeCIConfig(
        loss=CELoss(position=length - 1, label_token=int(tokens[-1])),
        imp_min_coeffs=tuple(10.0 ** -k for k in range(1, batch + 1)), steps=steps, mask_type=mask_type,  # type: ignore[arg-type]
        lr=LRSchedule(start_val=1e-2),
    )
    optimize_ci(model, tokens, OptimizeCIConfig(loss=config.loss, steps=2), sampling="continuous")
    t0 = time.perf_counter()
    optimize_ci(model, tokens, config, sampling="continuous")
    dt = time.perf_counter() - t0
    print(f"optimize S={length:4d} N={batch:2d} mask={mask_type:10s} {steps / dt:6.1f} steps/s "
          f"({batch * steps / dt:6.1f} element-steps/s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["auto", "demo", "fixture", "random"], default="auto",
                        help="auto: the demo if already built, else the fixture run")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--alive", type=int, default=8, help="alive components per layer and position (random model)")
    parser.add_argument("--max-brute-length", type=int, default=128)
    parser.add_argument("--opt-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    choice = args.model
    loaded = None
    if choice in ("auto", "demo"):
        loaded = load_demo(build=choice == "demo")
        choice = "demo" if loaded is not None else "fixture"
    if choice == "fixture":
        loaded = load_fixture()
    elif choice == "random":
        loaded = random_model()
    assert loaded is not None
    model, ctx = loaded
    alive = args.alive if choice == "random" else None  # real decompositions use their own CI
    lengths = [min(length, ctx) for length in args.lengths]
    if lengths != args.lengths:
        print(f"note: context {ctx} caps the prompt lengths to {sorted(set(lengths))}")
    print(f"model={choice} modules={len(model.module_to_c)} C_total={sum(model.module_to_c.values())} "
          f"threads={args.threads} device=cpu")
    for length in dict.fromkeys(lengths):
        bench_graph(model, length, alive, brute=length <= args.max_brute_length)
    for length in dict.fromkeys(min(x, ctx) for x in (16, 64)):
        for batch, mask_type in ((1, "ci"), (1, "stochastic"), (8, "stochastic")):
            bench_optimize(model, length, batch, mask_type, args.opt_steps)


if __name__ == "__main__":
    main()
