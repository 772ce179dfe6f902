"""LR schedule and p annealing (spec §4.2, §3.2, §8 item 14)."""

import math

import pytest

from spdlab.common.spd_config import ScheduleConfig
from spdlab.core.schedules import get_annealed_p, get_scheduled_value


@pytest.mark.parametrize("fn_type", ["linear", "cosine"])
@pytest.mark.parametrize("warmup_pct", [0.0, 0.2])
def test_decay_hits_start_after_warmup_and_final_at_last_optimizer_step(fn_type: str, warmup_pct: float) -> None:
    cfg = ScheduleConfig(start_val=2e-3, warmup_pct=warmup_pct, final_val_frac=0.1, fn_type=fn_type)
    steps = 100
    warmup = int(steps * warmup_pct)
    assert get_scheduled_value(warmup, steps, cfg) == pytest.approx(2e-3)
    assert get_scheduled_value(steps - 1, steps, cfg) == pytest.approx(2e-4)
    values = [get_scheduled_value(s, steps, cfg) for s in range(warmup, steps)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_cosine_midpoint_and_linear_midpoint() -> None:
    steps = 11  # progress = (step)/(steps-1): step 5 is exactly halfway
    cos = ScheduleConfig(start_val=1.0, final_val_frac=0.0, fn_type="cosine")
    lin = ScheduleConfig(start_val=1.0, final_val_frac=0.5, fn_type="linear")
    assert get_scheduled_value(5, steps, cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert get_scheduled_value(5, steps, lin) == pytest.approx(0.75)


def test_warmup_ramps_linearly_from_zero() -> None:
    cfg = ScheduleConfig(start_val=1.0, warmup_pct=0.1, final_val_frac=1.0, fn_type="constant")
    assert [get_scheduled_value(s, 100, cfg) for s in range(0, 11, 5)] == pytest.approx([0.0, 0.5, 1.0])


def test_constant_is_flat_and_tiny_runs_use_start() -> None:
    cfg = ScheduleConfig(start_val=0.3, fn_type="constant")
    assert {get_scheduled_value(s, 50, cfg) for s in range(51)} == {0.3}
    cos = ScheduleConfig(start_val=0.3, final_val_frac=0.0, fn_type="cosine")
    assert get_scheduled_value(0, 1, cos) == 0.3  # D = steps − W ≤ 1


def test_constant_requires_final_frac_one() -> None:
    with pytest.raises(ValueError):
        ScheduleConfig(start_val=1.0, final_val_frac=0.5, fn_type="constant")


def test_p_annealing() -> None:
    # p0 = 2 → 1 over fractions 0..0.5: p(0.25) = 1.5
    assert get_annealed_p(0.25, 2.0, start_frac=0.0, final_p=1.0, end_frac=0.5) == pytest.approx(1.5)
    assert get_annealed_p(0.75, 2.0, start_frac=0.0, final_p=1.0, end_frac=0.5) == 1.0
    assert get_annealed_p(0.1, 2.0, start_frac=0.2, final_p=1.0, end_frac=0.5) == 2.0
    assert get_annealed_p(0.9, 2.0, start_frac=1.0, final_p=1.0, end_frac=1.0) == 2.0
    assert get_annealed_p(0.9, 2.0, start_frac=0.0, final_p=None) == 2.0
