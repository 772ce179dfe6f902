"""Harvest shards: one worker runs a contiguous window range; shard states merge exactly.

The dataset is sharded by window index (not by skipping other ranks' batches, as the research
code did), so a shard reads only its own windows and its result does not depend on iteration order
elsewhere. A shard is resumable: pass the last checkpointed state and it continues after the
windows it already counted.
"""

from collections.abc import Callable, Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel, no_progress
from spdlab.core.harvest.adapter import DecompositionAdapter, flatten_batch
from spdlab.core.harvest.config import HarvestConfig
from spdlab.core.harvest.stats import HarvestState, clone_state, merge_into, new_state, update

__all__ = ["HarvestConfig", "ShardSpec", "merge_shards", "plan_shards", "run_harvest_shard", "shard_range"]

CheckpointFn = Callable[[HarvestState], None]


class ShardSpec(BaseModel):
    """Shard `index` of `count`: a contiguous, balanced range of the dataset's windows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _in_range(self) -> "ShardSpec":
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} must be < count {self.count}")
        return self


def shard_range(n_windows: int, shard: ShardSpec) -> tuple[int, int]:
    """`[start, stop)` window range of a shard; sizes differ by at most one."""
    base, rem = divmod(n_windows, shard.count)
    start = shard.index * base + min(shard.index, rem)
    return start, start + base + (1 if shard.index < rem else 0)


def plan_shards(n_windows: int, n_shards: int) -> list[ShardSpec]:
    """The shards of a run; never more shards than windows."""
    count = max(1, min(n_shards, n_windows))
    return [ShardSpec(index=i, count=count) for i in range(count)]


def _resume_point(state: HarvestState, start: int, stop: int) -> int:
    """The first window after the prefix `[start, x)` already counted in `state`."""
    if not state.windows_done:
        return start
    if len(state.windows_done) != 1 or state.windows_done[0][0] != start or state.windows_done[0][1] > stop:
        raise ValueError(
            f"resume state covers {state.windows_done}, which is not a prefix of this shard [{start}, {stop})"
        )
    return state.windows_done[0][1]


def run_harvest_shard(
    adapter: DecompositionAdapter,
    windows: Tensor,
    shard: ShardSpec,
    config: HarvestConfig,
    *,
    progress: ProgressFn = no_progress,
    should_cancel: CancelFn | None = None,
    resume_state: HarvestState | None = None,
    checkpoint: CheckpointFn | None = None,
    checkpoint_every: int = 50,
) -> HarvestState:
    """Harvest one shard of `windows` (`[N, S]` token ids of the whole dataset).

    Progress is `(windows done, windows in shard, "harvest")`; `checkpoint(state)` is called every
    `checkpoint_every` batches and at the end, so a restarted worker can pass the saved state as
    `resume_state`. Cancellation raises `spdlab.core.callbacks.Cancelled` between batches.
    """
    start, stop = shard_range(int(windows.shape[0]), shard)
    device = adapter.device
    if resume_state is not None:
        state = resume_state if resume_state.firing_counts.device == device else clone_state(resume_state, device)
        if state.config != config:
            raise ValueError("resume state was produced with a different harvest config")
    else:
        state = new_state(config, adapter.layers, adapter.activation_types, adapter.vocab_size, device)
    layers, types = list(adapter.layers), list(adapter.activation_types)
    if state.layers != layers or state.activation_types != types:
        raise ValueError("resume state was produced by a different decomposition")
    pos = _resume_point(state, start, stop)
    total = stop - start
    progress(pos - start, total, "harvest")
    n_batches = 0
    with torch.no_grad():
        while pos < stop:
            check_cancel(should_cancel)
            end = min(stop, pos + config.batch_size)
            tokens = windows[pos:end].to(device=device, dtype=torch.int64)
            out = adapter.run_batch(tokens)
            firing, acts = flatten_batch(out, layers, types)
            update(state, tokens, firing, acts, out.output_probs, window_start=pos)
            pos = end
            n_batches += 1
            progress(pos - start, total, "harvest")
            if checkpoint is not None and n_batches % checkpoint_every == 0 and pos < stop:
                checkpoint(state)
    if checkpoint is not None:
        checkpoint(state)
    return state


def merge_shards(states: Iterable[HarvestState], progress: ProgressFn = no_progress) -> HarvestState:
    """Exact merge of shard states (streamed: one state held besides the accumulator).

    Counts equal those of a single-worker run over the same windows; the reservoirs too (same keys).
    Overlapping window ranges (a shard merged twice) are refused.
    """
    acc: HarvestState | None = None
    for i, state in enumerate(states):
        if acc is None:
            acc = clone_state(state)
        else:
            merge_into(acc, state)
        progress(i + 1, 0, "merge")
    if acc is None:
        raise ValueError("no shard states to merge")
    return acc


def missing_windows(state: HarvestState, n_windows: int) -> list[tuple[int, int]]:
    """Window ranges of `[0, n_windows)` not yet counted (empty when a merged run is complete)."""
    gaps, cursor = [], 0
    for a, b in state.windows_done:
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < n_windows:
        gaps.append((cursor, n_windows))
    return gaps
