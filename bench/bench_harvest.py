"""Harvest throughput for one worker, merge time, state size and peak memory; dataset attributions.

Models: `fixture` (the research-code Llama fixture run, context 32) and `demo` (the bundled demo
decomposition, built first if missing). Prints one block per model.

    .venv/bin/python bench/bench_harvest.py --model fixture --windows 512 --shards 4
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import torch

from spdlab.core.harvest.dataset_attributions import DatasetAttributionConfig, run_attribution_shard
from spdlab.core.harvest.harvest import HarvestConfig, ShardSpec, merge_shards, plan_shards, run_harvest_shard
from spdlab.core.harvest.spd_adapter import SPDAdapter
from spdlab.core.harvest.stats import finalize, state_tensors

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "research_runs" / "llama_mlp_vector"


def _load(name: str, device: str) -> Any | None:
    if name == "fixture":
        from spdlab.core.research_import import import_research_run

        return import_research_run(FIXTURE, device=device)
    from spdlab.core.demo.build import load_demo

    return load_demo(device=device)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reference_tokens_per_s(adapter: SPDAdapter, windows: torch.Tensor, batch_size: int, device: str) -> float:
    """Throughput of the model work a harvest cannot avoid: the forward with CI, batch by batch."""
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(windows), batch_size):
        adapter.run_batch(windows[start : start + batch_size].to(adapter.device))
    _sync(device)
    return windows.numel() / (time.perf_counter() - t0)


def bench_model(name: str, args: argparse.Namespace) -> None:
    loaded = _load(name, args.device)
    if loaded is None:
        print(f"[{name}] skipped: no loader available")
        return
    adapter = SPDAdapter.from_loaded(loaded)
    seq = adapter.context_length
    windows = torch.randint(0, adapter.vocab_size, (args.windows, seq), generator=torch.Generator().manual_seed(0))
    cfg = HarvestConfig(batch_size=args.batch_size, examples_per_component=args.examples,
                        context_tokens_per_side=args.ctx)
    n_comp = sum(la.n_components for la in adapter.layers)
    print(f"[{name}] C={n_comp} layers={len(adapter.layers)} V={adapter.vocab_size} seq={seq} "
          f"windows={args.windows} batch={args.batch_size} k={args.examples} device={args.device}")

    # Warm-up batch, then one worker over the whole set.
    run_harvest_shard(adapter, windows[: args.batch_size], ShardSpec(index=0, count=1), cfg)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(args.device)
    t0 = time.perf_counter()
    single = run_harvest_shard(adapter, windows, ShardSpec(index=0, count=1), cfg)
    _sync(args.device)
    dt = time.perf_counter() - t0
    print(f"  harvest 1 worker: {args.windows * seq / dt:,.0f} tokens/s ({dt:.2f} s)")
    ref = _reference_tokens_per_s(adapter, windows, args.batch_size, args.device)
    print(f"  reference (the adapter's forward + CI alone): {ref:,.0f} tokens/s; "
          f"harvest bookkeeping costs {ref * dt / (args.windows * seq) - 1:.0%} on top")
    if args.device.startswith("cuda"):
        print(f"  peak GPU memory (shard): {torch.cuda.max_memory_allocated() / 2**20:,.1f} MiB")
    state_bytes = sum(t.numel() * t.element_size() for t in state_tensors(single).values())
    print(f"  shard state size: {state_bytes / 2**20:,.1f} MiB; peak RSS so far {_peak_rss_mib():,.0f} MiB")

    shards = [run_harvest_shard(adapter, windows, s, cfg) for s in plan_shards(args.windows, args.shards)]
    t0 = time.perf_counter()
    merged = merge_shards(shards)
    _sync(args.device)
    print(f"  merge of {args.shards} shards: {time.perf_counter() - t0:.3f} s "
          f"(counts equal single run: {torch.equal(merged.cooccurrence, single.cooccurrence)})")
    t0 = time.perf_counter()
    finalize(merged)
    print(f"  finalize: {time.perf_counter() - t0:.3f} s")

    n_attr = min(args.windows, args.attr_windows)
    t0 = time.perf_counter()
    run_attribution_shard(loaded.component_model, windows[:n_attr], ShardSpec(index=0, count=1),
                          DatasetAttributionConfig(batch_size=args.batch_size), sampling=loaded.config.sampling)
    _sync(args.device)
    dt = time.perf_counter() - t0
    print(f"  dataset attributions: {n_attr * seq / dt:,.0f} tokens/s ({dt:.2f} s, all targets alive)")
    print(f"  peak RSS: {_peak_rss_mib():,.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=["fixture", "demo", "all"], default="all")
    p.add_argument("--windows", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--ctx", type=int, default=10)
    p.add_argument("--attr-windows", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in (["fixture", "demo"] if args.model == "all" else [args.model]):
        bench_model(name, args)


if __name__ == "__main__":
    main()
