"""Optimize the CI of one prompt: a sparser set of components that still explains a chosen output.

Follows the research app's `optimize_ci_values(_batched)` (app_backend §3) with its limits fixed:

- Variables: the pre-sigmoid CI of the initially alive entries (CI > 0), initialised from the CI
  function; dead entries are pinned at pre-sigmoid 0 (CI 0), so optimization only removes nodes.
  One dense `[N, S, C]` parameter per layer with a fixed alive mask (no per-position scatter).
- A batch of N importance-minimality coefficients is optimized in one loop: element n's loss is
  `coeff·recon_n + imp_coeff_n·imp_n (+ coeff·pgd_n)`; AdamW is element-wise and the elements never
  interact, so the batch equals N separate runs. Random draws (stochastic masks, PGD inits) are shared
  by all elements (common random numbers), which is what makes that equality exact.
- Seeded: every random draw comes from one `torch.Generator(seed)`, so CPU runs are bit-identical.
- The LR schedule (`constant`/`linear`/`cosine` with warm-up) and p-annealing are honoured.
- L0 (one definition everywhere): the number of (layer, position, component) entries with CI > 0 at
  positions ≤ the loss position, i.e. the component node count of the optimized graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel
from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.mask_pgd import interpolated_mask_infos, pgd_ascent, random_sources
from spdlab.core.masks import Sampling, make_mask_infos
from spdlab.core.prompt_losses import PromptLoss, label_probability, loss_position, prompt_loss, validate_loss
from spdlab.core.schedules import get_annealed_p, get_scheduled_value

MaskType = Literal["ci", "stochastic"]


@dataclass(frozen=True)
class LRSchedule:
    """Learning-rate schedule (fields of `schedules.ScheduleLike`): warm-up from 0, then decay to
    `final_val_frac · start_val`."""

    start_val: float = 1e-2
    fn_type: Literal["constant", "linear", "cosine"] = "constant"
    warmup_pct: float = 0.0
    final_val_frac: float = 1.0


@dataclass(frozen=True)
class PGDSettings:
    n_steps: int
    step_size: float


@dataclass(frozen=True)
class OptimizeCIConfig:
    loss: PromptLoss
    imp_min_coeffs: tuple[float, ...] = (1e-3,)
    steps: int = 2000
    pnorm: float = 0.3
    beta: float = 0.0
    eps: float = 1e-12
    p_anneal_start_frac: float = 1.0
    p_anneal_final_p: float | None = None
    p_anneal_end_frac: float = 1.0
    mask_type: MaskType = "stochastic"
    lr: LRSchedule = field(default_factory=LRSchedule)
    adv_pgd: PGDSettings | None = None
    use_delta_component: bool = True
    seed: int = 0
    snapshot_every: int | None = None  # default max(1, steps // 20)


@dataclass(frozen=True)
class CISnapshot:
    """Alive counts during optimization; `alive_counts[n][l][s]` = #(CI > 0) of layer l at position s."""

    step: int
    total_steps: int
    layers: list[str]
    alive_counts: list[list[list[int]]]
    initial_alive_counts: list[list[int]]
    l0_total: list[int]
    loss: float | None  # total loss of the previous step (summed over the batch)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


SnapshotFn = Callable[[CISnapshot], None]


@dataclass(frozen=True)
class OptimizationMetrics:
    """Per batch element. Label probabilities only for CE / logit losses; PGD only when configured."""

    imp_min_coeff: float
    l0_total: int
    final_loss: float  # this element's total loss at the last step
    ci_masked_label_prob: float | None
    stoch_masked_label_prob: float | None
    adv_pgd_label_prob: float | None


@dataclass(frozen=True)
class OptimizeCIResult:
    """`pre_sigmoid` / `ci_lower`: `[N, S, C]` per concrete path; `adv_pgd_logits`: `[N, S, V]` or None."""

    pre_sigmoid: dict[str, Tensor]
    ci_lower: dict[str, Tensor]
    metrics: list[OptimizationMetrics]
    adv_pgd_logits: Tensor | None

    def ci_lower_of(self, n: int) -> dict[str, Tensor]:
        """Element n's CI `[S, C]` per path, the `ci_lower` override of `compute_attribution_graph`."""
        return {p: c[n] for p, c in self.ci_lower.items()}


# --- entry point ----------------------------------------------------------------------------------


def optimize_ci(
    model: ComponentModel,
    tokens: Tensor,
    config: OptimizeCIConfig,
    *,
    sampling: Sampling,
    layer_names: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    on_snapshot: SnapshotFn | None = None,
    cancel: CancelFn | None = None,
) -> OptimizeCIResult:
    """Optimize the CI of prompt `tokens` (`[S]` or `[1, S]`) for each coefficient in the config.

    `layer_names` (e.g. canonical names, in `model.target_module_paths` order) label snapshots.
    Progress `(step, steps, "optimizing")` and a snapshot every `snapshot_every` steps; `cancel` is
    checked every step. The model is not modified (gradients flow only into the CI variables).
    """
    device = next(model.parameters()).device
    tokens = tokens.reshape(1, -1).to(device=device, dtype=torch.long)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    problem = _Problem.build(model, tokens, config, sampling, gen)
    validate_loss(config.loss, tokens.shape[1], problem.target_logits.shape[-1])
    params = {p: problem.init_pre[p].expand(problem.n, -1, -1).clone().requires_grad_(True) for p in problem.paths}
    opt = torch.optim.AdamW(list(params.values()), lr=config.lr.start_val, weight_decay=0.0)
    every = config.snapshot_every or max(1, config.steps // 20)
    names = list(layer_names) if layer_names is not None else problem.paths
    last_loss: float | None = None
    per_element = torch.full((problem.n,), float("nan"))
    for step in range(config.steps):
        check_cancel(cancel)
        if step % every == 0:
            _report(problem, params, step, config.steps, names, last_loss, progress, on_snapshot)
        for group in opt.param_groups:
            group["lr"] = get_scheduled_value(step, config.steps, config.lr)
        per_element = problem.step_loss(params, step / config.steps, gen)
        total = per_element.sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        last_loss = float(total.detach())
    _report(problem, params, config.steps, config.steps, names, last_loss, progress, on_snapshot)
    return problem.result(params, gen, per_element.detach())


# --- the optimization problem ---------------------------------------------------------------------


@dataclass
class _Problem:
    model: ComponentModel
    config: OptimizeCIConfig
    tokens: Tensor  # [N, S]
    target_logits: Tensor  # [S, V]
    alive: dict[str, Tensor]  # [S, C] bool
    init_pre: dict[str, Tensor]  # [1, S, C]
    coeffs: Tensor  # [N]
    sampling: Sampling
    deltas: dict[str, Tensor] | None
    n_l0_pos: int  # positions counted by L0

    @property
    def paths(self) -> list[str]:
        return self.model.target_module_paths

    @property
    def n(self) -> int:
        return int(self.coeffs.shape[0])

    @classmethod
    @torch.no_grad()
    def build(
        cls, model: ComponentModel, tokens: Tensor, config: OptimizeCIConfig, sampling: Sampling,
        gen: torch.Generator,
    ) -> _Problem:
        if not config.imp_min_coeffs:
            raise ValueError("imp_min_coeffs must list at least one coefficient")
        out = model(tokens, cache_type="input")
        assert isinstance(out, OutputWithCache)
        ci = model.calc_causal_importances(out.cache, sampling=sampling, generator=gen)
        alive = {p: ci.lower_leaky[p][0] > 0 for p in model.target_module_paths}
        init = {p: torch.where(alive[p], ci.pre_sigmoid[p][0], 0.0)[None] for p in model.target_module_paths}
        n = len(config.imp_min_coeffs)
        pos = loss_position(config.loss)
        return cls(
            model=model,
            config=config,
            tokens=tokens.expand(n, -1),
            target_logits=out.output[0],
            alive=alive,
            init_pre=init,
            coeffs=torch.tensor(config.imp_min_coeffs, device=tokens.device, dtype=out.output.dtype),
            sampling=sampling,
            deltas=model.calc_weight_deltas() if config.use_delta_component else None,
            n_l0_pos=tokens.shape[1] if pos is None else pos + 1,
        )

    def ci(self, params: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(lower, upper) leaky CI `[N, S, C]`; dead entries are pinned at pre-sigmoid 0."""
        lower, upper = {}, {}
        for p, value in params.items():
            pre = torch.where(self.alive[p], value, torch.zeros_like(value))
            lower[p] = self.model.lower_leaky_fn(pre)
            upper[p] = self.model.upper_leaky_fn(pre)
        return lower, upper

    def forward(self, mask_infos: dict) -> Tensor:
        logits = self.model(self.tokens, mask_infos=mask_infos)
        assert isinstance(logits, Tensor)
        return logits

    def recon(self, logits: Tensor) -> Tensor:
        return prompt_loss(self.config.loss, logits, self.target_logits)

    def stochastic_mask_infos(self, lower: dict[str, Tensor], gen: torch.Generator) -> dict:
        """`ci + (1 − ci)·r` with r ~ U(0,1) (or {0,1}), plus U(0,1) delta masks; one draw for the batch."""
        n, seq = self.tokens.shape
        masks = {}
        for p, c in lower.items():
            shape = (1, *c.shape[1:])
            if self.sampling == "binomial":
                r = torch.randint(0, 2, shape, generator=gen, device=c.device).to(c.dtype)
            else:
                r = torch.rand(shape, generator=gen, device=c.device, dtype=c.dtype)
            masks[p] = c + (1 - c) * r
        deltas = None
        if self.deltas is not None:
            deltas = {
                p: WeightDeltaAndMask(d, torch.rand((1, seq), generator=gen, device=d.device).expand(n, seq))
                for p, d in self.deltas.items()
            }
        return make_mask_infos(masks, "all", deltas)

    def recon_mask_infos(self, lower: dict[str, Tensor], gen: torch.Generator) -> dict:
        if self.config.mask_type == "ci":
            return make_mask_infos(lower)
        return self.stochastic_mask_infos(lower, gen)

    def imp_min(self, upper: dict[str, Tensor], frac: float) -> Tensor:
        cfg = self.config
        p = get_annealed_p(frac, cfg.pnorm, cfg.p_anneal_start_frac, cfg.p_anneal_final_p, cfg.p_anneal_end_frac)
        return importance_minimality_per_element(upper, p, cfg.beta, cfg.eps)

    def pgd_loss(self, lower: dict[str, Tensor], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Per-element recon loss and logits under adversarial masks found by PGD on the detached CI."""
        settings = self.config.adv_pgd
        assert settings is not None
        width = 1 if self.deltas is not None else 0
        shapes = {p: (*c.shape[1:-1], c.shape[-1] + width) for p, c in lower.items()}
        init = random_sources(shapes, self.n, gen, self.tokens.device)
        trainable = {}
        for p in lower:
            alive = self.alive[p]
            if width:
                alive = torch.cat([alive, torch.ones_like(alive[:, :1])], dim=-1)
            init[p] = init[p] * alive  # dead entries fixed at 0: their masks stay at CI 0
            trainable[p] = alive
        detached = {p: c.detach() for p, c in lower.items()}
        sources = pgd_ascent(
            lambda s: self.recon(self.forward(interpolated_mask_infos(detached, s, self.deltas))),
            init, trainable, settings.n_steps, settings.step_size,
        )
        logits = self.forward(interpolated_mask_infos(lower, sources, self.deltas))
        return self.recon(logits), logits

    def step_loss(self, params: dict[str, Tensor], frac: float, gen: torch.Generator) -> Tensor:
        lower, upper = self.ci(params)
        coeff = self.config.loss.coeff
        loss = coeff * self.recon(self.forward(self.recon_mask_infos(lower, gen)))
        loss = loss + self.coeffs * self.imp_min(upper, frac)
        if self.config.adv_pgd is not None:
            loss = loss + coeff * self.pgd_loss(lower, gen)[0]
        return loss

    def alive_counts(self, params: dict[str, Tensor]) -> Tensor:
        """`[N, L, S]` counts of CI > 0."""
        with torch.no_grad():
            lower, _ = self.ci(params)
            return torch.stack([(c > 0).sum(-1) for c in lower.values()], dim=1)

    @torch.no_grad()
    def result(self, params: dict[str, Tensor], gen: torch.Generator, final: Tensor) -> OptimizeCIResult:
        lower, _ = self.ci(params)
        loss = self.config.loss
        ci_prob = label_probability(loss, self.forward(make_mask_infos(lower)))
        stoch_prob = label_probability(loss, self.forward(self.stochastic_mask_infos(lower, gen)))
        pgd_logits = pgd_prob = None
        if self.config.adv_pgd is not None:
            pgd_logits = self.pgd_loss(lower, gen)[1]
            pgd_prob = label_probability(loss, pgd_logits)
        l0 = self.alive_counts(params)[:, :, : self.n_l0_pos].sum((1, 2))
        metrics = [
            OptimizationMetrics(
                imp_min_coeff=float(self.config.imp_min_coeffs[i]),
                l0_total=int(l0[i]),
                final_loss=float(final[i]),
                ci_masked_label_prob=_item(ci_prob, i),
                stoch_masked_label_prob=_item(stoch_prob, i),
                adv_pgd_label_prob=_item(pgd_prob, i),
            )
            for i in range(self.n)
        ]
        pre = {p: torch.where(self.alive[p], v, torch.zeros_like(v)).detach() for p, v in params.items()}
        return OptimizeCIResult(pre_sigmoid=pre, ci_lower={p: c.detach() for p, c in lower.items()},
                                metrics=metrics, adv_pgd_logits=pgd_logits)


def importance_minimality_per_element(upper: dict[str, Tensor], p: float, beta: float, eps: float) -> Tensor:
    """`[N]`: Σ_l Σ_c [m + β·m·log2(1 + S)] with S = Σ_positions (ci_upper + eps)^p, m = S / #positions.

    The research loss (`losses.importance_minimality`) per batch element, vectorized over the batch.
    """
    total: Tensor | None = None
    for u in upper.values():
        sums = (u + eps).pow(p).sum(1)  # [N, C]
        means = sums / u.shape[1]
        layer = (means + beta * means * torch.log2(1 + sums)).sum(-1)
        total = layer if total is None else total + layer
    assert total is not None, "no layers"
    return total


def _item(values: Tensor | None, i: int) -> float | None:
    return None if values is None else float(values[i])


def _report(
    problem: _Problem,
    params: dict[str, Tensor],
    step: int,
    steps: int,
    names: list[str],
    last_loss: float | None,
    progress: ProgressFn | None,
    on_snapshot: SnapshotFn | None,
) -> None:
    if progress is not None:
        progress(step, steps, "optimizing")
    if on_snapshot is None:
        return
    counts = problem.alive_counts(params)
    initial = torch.stack([a.sum(-1) for a in problem.alive.values()])
    on_snapshot(CISnapshot(
        step=step,
        total_steps=steps,
        layers=names,
        alive_counts=counts.tolist(),
        initial_alive_counts=initial.tolist(),
        l0_total=counts[:, :, : problem.n_l0_pos].sum((1, 2)).tolist(),
        loss=last_loss,
    ))
