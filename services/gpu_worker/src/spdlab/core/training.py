"""The SPD decomposition loop (research code: `optimize` in `spd/run_spd.py`, spec §4.2).

Pure: no files or database. Batches come from the caller, logs and checkpoints go out through
callbacks, progress and cancellation through `ProgressFn` / `CancelFn`.
"""

import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grad_norm_

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel
from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.eval_metrics import calc_ci_l_zero
from spdlab.core.evaluation import evaluate
from spdlab.core.losses import compute_losses
from spdlab.core.losses.faithfulness import faithfulness_loss
from spdlab.core.schedules import get_scheduled_value
from spdlab.core.targets.tms import TMSModel

LogFn = Callable[[int, dict[str, float]], None]
CheckpointFn = Callable[[int, ComponentModel], None]


@dataclass
class TrainResult:
    steps: int
    last_train_log: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    eval_arrays: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0


def set_seed(seed: int) -> None:
    """Seed torch, numpy and random, like the research entry points."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def tied_component_pairs(model: ComponentModel) -> list[tuple[str, str]]:
    """`(src, tgt)` pairs whose components must be tied: TMS with tied target weights."""
    target = model.target_model
    tied = isinstance(target, TMSModel) and target.config.tied_weights
    return [("linear1", "linear2")] if tied and {"linear1", "linear2"} <= set(model.components) else []


def tie_components_(model: ComponentModel, pairs: list[tuple[str, str]]) -> None:
    """`tgt.U := src.V^T`, `tgt.V := src.U^T`, sharing storage (as the research code does)."""
    for src_name, tgt_name in pairs:
        src, tgt = model.components[src_name], model.components[tgt_name]
        tgt.U.data = src.V.data.T
        tgt.V.data = src.U.data.T


def component_params(model: ComponentModel) -> list[nn.Parameter]:
    return [p for path in model.target_module_paths for p in (model.components[path].V, model.components[path].U)]


def run_faithfulness_warmup(
    model: ComponentModel, config: Any, should_cancel: CancelFn, progress: ProgressFn
) -> None:
    """Minimize the faithfulness loss over component params only, with a throwaway AdamW."""
    optimizer = torch.optim.AdamW(
        component_params(model), lr=config.faithfulness_warmup_lr,
        weight_decay=config.faithfulness_warmup_weight_decay,
    )
    n = config.faithfulness_warmup_steps
    for step in range(n):
        check_cancel(should_cancel)
        optimizer.zero_grad()
        faithfulness_loss(model.calc_weight_deltas()).backward()
        optimizer.step()
        progress(step + 1, n, "faithfulness_warmup")


def grad_norms(model: ComponentModel) -> dict[str, float]:
    """`train/grad_norms/...` entries: per component param, per CI-fn param, and summaries."""
    named: dict[str, Tensor] = {}
    for path in model.target_module_paths:
        comp = model.components[path]
        for pname in ("V", "U"):
            grad = getattr(comp, pname).grad
            if grad is not None:
                named[f"components/{path}.{pname}"] = grad.detach().float().norm()
    for name, param in model.ci_fn.named_parameters():
        if param.grad is not None:
            named[f"ci_fns/{name}"] = param.grad.detach().float().norm()
    if not named:
        return {}
    comp_sq = sum((v**2 for k, v in named.items() if k.startswith("components/")), torch.zeros(()))
    ci_sq = sum((v**2 for k, v in named.items() if k.startswith("ci_fns/")), torch.zeros(()))
    named["summary/components"] = comp_sq.sqrt()
    named["summary/ci_fns"] = ci_sq.sqrt()
    named["summary/total"] = (comp_sq + ci_sq).sqrt()
    keys = list(named)
    values = torch.stack([named[k].cpu() for k in keys]).tolist()
    return {f"train/grad_norms/{k}": v for k, v in zip(keys, values, strict=True)}


def _autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _train_log(
    losses: dict[str, Tensor], total: Tensor, ci_lower: dict[str, Tensor], threshold: float,
    model: ComponentModel, lr: float,
) -> dict[str, float]:
    scalars = {f"train/loss/{k}": v.detach().float() for k, v in losses.items()}
    scalars["train/loss/total"] = total.detach().float()
    scalars |= {f"train/l0/{p}": calc_ci_l_zero(c, threshold) for p, c in ci_lower.items()}
    keys = list(scalars)
    values = torch.stack([scalars[k].cpu() for k in keys]).tolist()  # one host sync per log
    log = dict(zip(keys, values, strict=True))
    log |= grad_norms(model)
    log["train/schedules/lr"] = lr
    return log


def decompose(
    config: Any,
    model: ComponentModel,
    batches: Iterator[Tensor],
    eval_batches: Callable[[], Iterator[Tensor]] | None,
    *,
    progress: ProgressFn,
    should_cancel: CancelFn,
    on_log: LogFn,
    on_checkpoint: CheckpointFn | None,
) -> TrainResult:
    """Train `model`'s components and CI function for `config.steps` steps (`steps + 1` iterations;
    the last one only logs, evaluates and checkpoints). Raises `Cancelled` when asked to stop.

    Torch's global RNG is re-seeded with `config.seed` here (mask noise); callers that want the
    research code's component initialization should also `set_seed(config.seed)` before building
    `model`, as its entry points do. The device is the model's.
    """
    started = time.perf_counter()
    device = next(model.parameters()).device
    set_seed(config.seed)
    tie_components_(model, tied_component_pairs(model))

    comp_params = component_params(model)
    ci_params = list(model.ci_fn.parameters())
    optimizer = torch.optim.AdamW(comp_params + ci_params, lr=config.lr_schedule.start_val, weight_decay=0)
    if config.faithfulness_warmup_steps > 0:
        run_faithfulness_warmup(model, config, should_cancel, progress)

    steps = config.steps
    result = TrainResult(steps=steps)
    for step in range(steps + 1):
        check_cancel(should_cancel)
        optimizer.zero_grad()
        lr = get_scheduled_value(step, steps, config.lr_schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr

        weight_deltas = model.calc_weight_deltas()
        batch = next(batches).to(device)
        with _autocast(device, config.autocast_bf16):
            target = model(batch, cache_type="input")
            assert isinstance(target, OutputWithCache)
            ci = model.calc_causal_importances(target.cache, sampling=config.sampling)
            losses = compute_losses(
                config.loss_metric_configs, model, batch, ci, weight_deltas, target.output, step / steps,
                sampling=config.sampling, use_delta_component=config.use_delta_component,
                n_mask_samples=config.n_mask_samples, output_loss_type=config.output_loss_type,
            )
        coeffs = {c.classname: c.coeff for c in config.loss_metric_configs}
        total = torch.zeros((), device=device, dtype=torch.float32)
        for name, value in losses.items():
            total = total + coeffs[name] * value.float()
        total.backward()

        if step % config.train_log_freq == 0:
            result.last_train_log = _train_log(
                losses, total, ci.lower_leaky, config.ci_alive_threshold, model, lr
            )
            on_log(step, result.last_train_log)

        if eval_batches is not None and step % config.eval_freq == 0:
            slow = config.slow_eval_on_first_step if step == 0 else step % config.slow_eval_freq == 0
            with _autocast(device, config.autocast_bf16):
                evaluated = evaluate(config, model, eval_batches(), current_frac=step / steps, slow_step=slow)
            result.last_eval = evaluated.scalars
            result.eval_arrays |= evaluated.arrays
            on_log(step, evaluated.scalars)

        save_freq = config.save_freq
        if on_checkpoint is not None and ((save_freq and step > 0 and step % save_freq == 0) or step == steps):
            on_checkpoint(step, model)

        if step < steps:
            if config.grad_clip_norm_components is not None:
                clip_grad_norm_(comp_params, config.grad_clip_norm_components)
            if config.grad_clip_norm_ci_fns is not None:
                clip_grad_norm_(ci_params, config.grad_clip_norm_ci_fns)
            optimizer.step()
        progress(step, steps, "train")

    result.seconds = time.perf_counter() - started
    return result
