"""Scheduled values over training: the LR schedule and importance-minimality p annealing (spec §4.2, §3.2)."""

import math
from typing import Literal, Protocol


class ScheduleLike(Protocol):
    """The fields of the research code's `ScheduleConfig` that a schedule needs."""

    start_val: float
    warmup_pct: float
    final_val_frac: float
    fn_type: Literal["constant", "linear", "cosine"]


def get_scheduled_value(step: int, total_steps: int, config: ScheduleLike) -> float:
    """Value of `config`'s schedule at `step` of a run of `total_steps` steps.

    Linear warm-up from 0 over the first `int(total_steps * warmup_pct)` steps; afterwards the decay
    progress reaches 1 at `step == total_steps - 1`, so the last optimizer step uses the final value.
    """
    start = config.start_val
    warmup_steps = int(total_steps * config.warmup_pct)
    if step < warmup_steps:
        return start * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 1 or config.fn_type == "constant":
        return start
    progress = (step - warmup_steps) / (decay_steps - 1)
    final_frac = config.final_val_frac
    match config.fn_type:
        case "linear":
            return start * (final_frac + (1 - final_frac) * (1 - progress))
        case "cosine":
            return start * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule fn_type {config.fn_type!r}")


def get_annealed_p(
    current_frac: float,
    initial_p: float,
    start_frac: float = 1.0,
    final_p: float | None = None,
    end_frac: float = 1.0,
) -> float:
    """Importance-minimality p at training fraction `current_frac` (linear from start to end frac)."""
    if final_p is None or start_frac >= 1.0 or current_frac < start_frac:
        return initial_p
    if current_frac >= end_frac:
        return final_p
    progress = (current_frac - start_frac) / (end_frac - start_frac)
    return initial_p + (final_p - initial_p) * progress
