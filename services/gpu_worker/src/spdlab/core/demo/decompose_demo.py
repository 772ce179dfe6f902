"""The demo's SPD config and the function that decomposes the demo target with it.

Modelled on the research code's small LlamaSimpleMLP run (layerwise CI, KL output loss, importance
minimality with p annealed below 1, stochastic recon on random module subsets plus layerwise,
a strong faithfulness term after a warm-up), scaled for a CPU, plus a CI-masked recon term so a
short run already gives a usable CI-masked model while only a few components per module are alive
at a position and graphs stay readable.
"""

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from spdlab.common.spd_config import Config
from spdlab.core.callbacks import CancelFn, ProgressFn, never_cancel, no_progress
from spdlab.core.component_model import ComponentModel, build_component_model
from spdlab.core.targets.llama_simple_mlp import LlamaSimpleMLP
from spdlab.core.training import LogFn, TrainResult, decompose, set_seed

# Module patterns of one LlamaSimpleMLP block, in the research configs' order.
MODULE_PATTERNS = ("mlp.c_fc", "mlp.down_proj", "attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj")


class DemoSpdSettings(BaseModel):
    """The knobs of the demo decomposition; everything else in the `Config` is fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    C: dict[str, int] = {
        "mlp.c_fc": 48, "mlp.down_proj": 48,
        "attn.q_proj": 24, "attn.k_proj": 24, "attn.v_proj": 32, "attn.o_proj": 32,
    }
    ci_fn_type: Literal["vector_mlp", "shared_mlp"] = "shared_mlp"
    ci_hidden_dims: list[int] = [64]
    steps: int = 600
    batch_size: int = 4
    lr: float = 2e-3
    importance_coeff: float = 3e-3
    pnorm: float = 2.0
    final_p: float = 0.7
    beta: float = 0.1
    subset_coeff: float = 1.0
    layerwise_coeff: float = 0.5
    # Directly fits the CI-masked model (no delta), which graphs and interventions use; without it a
    # run this short leaves CI too low on components the output needs.
    ci_masked_coeff: float = 1.0
    faithfulness_coeff: float = 1e4
    faithfulness_warmup_steps: int = 100
    seed: int = 0


def demo_spd_config(s: DemoSpdSettings, n_ctx: int) -> Config:
    """The full research-style SPD `Config` for the demo."""
    return Config.model_validate({
        "seed": s.seed,
        "autocast_bf16": False,  # float32 on CPU is the reference
        "n_mask_samples": 1,
        "ci_config": {"mode": "layerwise", "fn_type": s.ci_fn_type, "hidden_dims": s.ci_hidden_dims},
        "sampling": "continuous",
        "sigmoid_type": "leaky_hard",
        "module_info": [{"module_pattern": f"h.*.{p}", "C": s.C[p]} for p in MODULE_PATTERNS],
        "use_delta_component": True,
        "loss_metric_configs": [
            {"classname": "ImportanceMinimalityLoss", "coeff": s.importance_coeff, "pnorm": s.pnorm,
             "beta": s.beta, "p_anneal_start_frac": 0.0, "p_anneal_final_p": s.final_p,
             "p_anneal_end_frac": 1.0, "eps": 1e-12},
            {"classname": "StochasticReconSubsetLoss", "coeff": s.subset_coeff,
             "routing": {"type": "uniform_k_subset"}},
            {"classname": "StochasticReconLayerwiseLoss", "coeff": s.layerwise_coeff},
            {"classname": "FaithfulnessLoss", "coeff": s.faithfulness_coeff},
            *([{"classname": "CIMaskedReconLoss", "coeff": s.ci_masked_coeff}] if s.ci_masked_coeff else []),
        ],
        "output_loss_type": "kl",
        "lr_schedule": {"start_val": s.lr, "warmup_pct": 0.0, "final_val_frac": 0.1, "fn_type": "cosine"},
        "steps": s.steps,
        "batch_size": s.batch_size,
        "faithfulness_warmup_steps": s.faithfulness_warmup_steps,
        "faithfulness_warmup_lr": 1e-3,
        "train_log_freq": 50,
        "eval_freq": max(s.steps, 1),
        "eval_batch_size": s.batch_size,
        "slow_eval_freq": max(s.steps, 1),
        "n_eval_steps": 1,
        "slow_eval_on_first_step": False,
        "eval_metric_configs": [{"classname": "CI_L0", "groups": {"total": ["*"]}}],
        "ci_alive_threshold": 0.1,
        "pretrained_model_class": "spdlab.core.targets.llama_simple_mlp.LlamaSimpleMLP",
        "pretrained_model_output_attr": "idx_0",
        "task_config": {"task_name": "lm", "max_seq_len": n_ctx, "dataset_name": "spdlab-demo-stories",
                        "column_name": "input_ids", "is_tokenized": True},
    })


def random_batches(windows: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless batches of rows drawn uniformly (with replacement) from `windows`, seeded."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield windows[torch.randint(windows.shape[0], (batch_size,), generator=gen)]


def decompose_target(
    target: LlamaSimpleMLP,
    config: Config,
    train_windows: Tensor,
    *,
    progress: ProgressFn = no_progress,
    should_cancel: CancelFn = never_cancel,
    on_log: LogFn | None = None,
) -> tuple[ComponentModel, TrainResult]:
    """Build the component model around the frozen `target` and train it on `train_windows`.

    The research eval is skipped (`eval_batches=None`); `evaluate.decomposition_metrics` summarises
    the result afterwards on held-out windows.
    """
    set_seed(config.seed)  # component init, as the research entry points seed before building
    cm = build_component_model(target, config)
    log: Callable[[int, dict[str, float]], None] = on_log or (lambda step, values: None)
    result = decompose(
        config, cm, random_batches(train_windows, config.batch_size, config.seed + 1), None,
        progress=progress, should_cancel=should_cancel, on_log=log, on_checkpoint=None,
    )
    cm.eval()
    return cm, result
