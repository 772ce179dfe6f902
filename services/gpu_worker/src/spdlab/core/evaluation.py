"""One evaluation pass of a decomposition during training (spec §4.4).

The metric list is the config's eval metrics plus every loss config whose class is not already an
eval metric. Each metric is an accumulator fed with every eval batch; slow metrics run only on slow
eval steps. Figure-only metrics of the research code (histograms, permuted-CI and UV plots) are not
computed here. Scalar keys follow the research code: `"{section}/{name}"`.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from spdlab.common import spd_config as cfg
from spdlab.core import eval_metrics as em
from spdlab.core.component_model import CIOutputs, ComponentModel, OutputWithCache
from spdlab.core.losses import LossContext, loss_function_for
from spdlab.core.losses.hidden_acts import ci_hidden_acts_sse, stochastic_hidden_acts_sse


@dataclass(frozen=True)
class EvalBatch:
    batch: Tensor
    target_out: Tensor
    ci: CIOutputs
    weight_deltas: dict[str, Tensor]


@dataclass
class EvalResult:
    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, Tensor] = field(default_factory=dict)


class Metric(Protocol):
    slow: bool

    def update(self, b: EvalBatch) -> None: ...

    def compute(self) -> EvalResult: ...


def _mean_of(values: list[Tensor]) -> Tensor:
    return torch.stack([v.detach().float() for v in values]).mean()


def _to_floats(tensors: dict[str, Tensor], prefix: str) -> dict[str, float]:
    keys = list(tensors)
    values = torch.stack([tensors[k].detach().float().cpu() for k in keys]).tolist() if keys else []
    return {f"{prefix}{k}": v for k, v in zip(keys, values, strict=True)}


@dataclass
class CIL0Metric:
    threshold: float
    groups: dict[str, list[str]] | None
    slow: bool = False
    _batches: list[dict[str, Tensor]] = field(default_factory=list)

    def update(self, b: EvalBatch) -> None:
        self._batches.append(em.ci_l0_per_module(b.ci.lower_leaky, self.threshold))

    def compute(self) -> EvalResult:
        l0 = {path: _mean_of([d[path] for d in self._batches]) for path in self._batches[0]}
        if self.groups:
            l0 |= em.l0_group_sums(l0, self.groups)
        return EvalResult(scalars=_to_floats(l0, f"l0/{self.threshold}_"))


@dataclass
class CEKLMetric:
    run: Any
    model: ComponentModel
    rounding_threshold: float
    slow: bool = False
    _sums: dict[str, Tensor] = field(default_factory=dict)
    _n_positions: int = 0

    def update(self, b: EvalBatch) -> None:
        values = em.ce_and_kl_losses(
            self.model, b.batch, b.target_out, b.ci.lower_leaky, b.weight_deltas, self.run.sampling,
            self.rounding_threshold,
        )
        n = b.batch.numel()  # batch values are weighted by B·S positions
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, torch.zeros(())) + v.detach().float().cpu() * n
        self._n_positions += n

    def compute(self) -> EvalResult:
        return EvalResult(scalars=_to_floats({k: v / self._n_positions for k, v in self._sums.items()}, "ce_kl/"))


@dataclass
class PerComponentMetric:
    """Mean per component over eval batches: activation density (`ci > threshold`) or mean CI."""

    section: str
    fn: Callable[[dict[str, Tensor]], dict[str, Tensor]]
    slow: bool = True
    _batches: list[dict[str, Tensor]] = field(default_factory=list)

    def update(self, b: EvalBatch) -> None:
        self._batches.append(self.fn(b.ci.lower_leaky))

    def compute(self) -> EvalResult:
        arrays = {
            f"{self.section}/{p}": torch.stack([d[p] for d in self._batches]).mean(dim=0).cpu()
            for p in self._batches[0]
        }
        return EvalResult(arrays=arrays)


@dataclass
class IdentityCIErrorMetric:
    run: Any
    model: ComponentModel
    identity: dict[str, int]
    dense: dict[str, int]
    slow: bool = True
    _batch_ndim: int | None = None
    _n_features: int | None = None

    def update(self, b: EvalBatch) -> None:
        if self._batch_ndim is None:
            self._batch_ndim, self._n_features = b.batch.ndim, b.batch.shape[-1]

    def compute(self) -> EvalResult:
        assert self._n_features is not None, "no eval batch seen"
        ci = em.single_feature_ci(self.model, self._n_features, self.run.sampling, with_pos_dim=self._batch_ndim == 3)
        errors = em.target_solution_errors(ci, self.identity, self.dense)
        return EvalResult(scalars={k: float(v) for k, v in errors.items()})


@dataclass
class LossMetric:
    """A training loss evaluated on eval batches: `loss/<classname>`, mean over batches."""

    run: Any
    model: ComponentModel
    loss_config: Any
    current_frac: float
    slow: bool = False
    _values: list[Tensor] = field(default_factory=list)

    def update(self, b: EvalBatch) -> None:
        ctx = LossContext(
            model=self.model, batch=b.batch, ci=b.ci,
            weight_deltas=b.weight_deltas if self.run.use_delta_component else None,
            all_weight_deltas=b.weight_deltas, target_out=b.target_out, current_frac=self.current_frac,
            sampling=self.run.sampling, n_mask_samples=self.run.n_mask_samples,
            output_loss_type=self.run.output_loss_type,
        )
        with torch.enable_grad():  # PGD losses need gradients w.r.t. their sources
            self._values.append(loss_function_for(self.loss_config)(self.loss_config, ctx).detach())

    def compute(self) -> EvalResult:
        return EvalResult(scalars={f"loss/{self.loss_config.classname}": float(_mean_of(self._values))})


@dataclass
class HiddenActsMetric:
    """Hidden-acts recon as an eval metric: per-module MSE and the total (`Σ SSE / Σ numel`)."""

    run: Any
    model: ComponentModel
    classname: str
    stochastic: bool
    slow: bool = True
    _sse: dict[str, Tensor] = field(default_factory=dict)
    _n: dict[str, int] = field(default_factory=dict)

    def update(self, b: EvalBatch) -> None:
        ci = b.ci.lower_leaky
        if self.stochastic:
            deltas = b.weight_deltas if self.run.use_delta_component else None
            sse = stochastic_hidden_acts_sse(self.model, b.batch, ci, deltas, self.run.sampling, self.run.n_mask_samples)
        else:
            sse = ci_hidden_acts_sse(self.model, b.batch, ci)
        for path, (s, n) in sse.items():
            self._sse[path] = self._sse.get(path, torch.zeros(())) + s.detach().float().cpu()
            self._n[path] = self._n.get(path, 0) + n

    def compute(self) -> EvalResult:
        per_module = {p: self._sse[p] / self._n[p] for p in self._sse}
        per_module_total = torch.stack(list(self._sse.values())).sum() / sum(self._n.values())
        scalars = _to_floats(per_module, f"loss/{self.classname}/")
        scalars[f"loss/{self.classname}"] = float(per_module_total)
        return EvalResult(scalars=scalars)


def _pattern_map(entries: Sequence[Any] | None, key: str) -> dict[str, int]:
    def get(entry: Any, name: str) -> Any:
        return entry[name] if isinstance(entry, dict) else getattr(entry, name)

    return {get(e, "layer_pattern"): int(get(e, key)) for e in entries or []}


MetricFactory = Callable[[Any, Any, ComponentModel, float], Metric | None]

# Eval-only metric configs; loss configs fall back to `LossMetric`.
METRIC_FACTORIES: dict[type, MetricFactory] = {
    cfg.CI_L0Config: lambda c, run, m, f: CIL0Metric(run.ci_alive_threshold, c.groups),
    cfg.CEandKLLossesConfig: lambda c, run, m, f: CEKLMetric(run, m, c.rounding_threshold),
    cfg.ComponentActivationDensityConfig: lambda c, run, m, f: PerComponentMetric(
        "component_activation_density", lambda ci: em.component_activation_density(ci, run.ci_alive_threshold)
    ),
    cfg.CIMeanPerComponentConfig: lambda c, run, m, f: PerComponentMetric("ci_mean", em.ci_mean_per_component),
    cfg.IdentityCIErrorConfig: lambda c, run, m, f: IdentityCIErrorMetric(
        run, m, _pattern_map(c.identity_ci, "n_features"), _pattern_map(c.dense_ci, "k")
    ),
    cfg.StochasticHiddenActsReconLossConfig: lambda c, run, m, f: HiddenActsMetric(run, m, c.classname, True),
    cfg.CIHiddenActsReconLossConfig: lambda c, run, m, f: HiddenActsMetric(run, m, c.classname, False),
}

# Figure-only metrics: nothing scalar to report in a headless service.
FIGURE_ONLY = {"CIHistograms", "PermutedCIPlots", "UVPlots"}
# Persistent-PGD losses need the training loop's persistent state; they are not re-evaluated.
SKIPPED_LOSSES = {"PersistentPGDReconLoss", "PersistentPGDReconSubsetLoss"}


def eval_metric_configs(run: Any) -> list[Any]:
    """Eval metrics + loss configs whose class is not already among them (spec §4.4)."""
    eval_cfgs = list(run.eval_metric_configs)
    names = {type(c) for c in eval_cfgs}
    extra = [c for c in run.loss_metric_configs if type(c) not in names and c.classname not in SKIPPED_LOSSES]
    return eval_cfgs + extra


def build_metrics(run: Any, model: ComponentModel, current_frac: float, slow_step: bool) -> list[Metric]:
    metrics: list[Metric] = []
    for c in eval_metric_configs(run):
        if c.classname in FIGURE_ONLY:
            continue
        factory = METRIC_FACTORIES.get(type(c))
        metric = factory(c, run, model, current_frac) if factory else LossMetric(run, model, c, current_frac)
        if metric is not None and (slow_step or not metric.slow):
            metrics.append(metric)
    return metrics


def evaluate(
    run: Any,
    model: ComponentModel,
    eval_batches: Iterator[Tensor],
    *,
    current_frac: float,
    slow_step: bool,
) -> EvalResult:
    """Run `run.n_eval_steps` eval batches through every metric (no grad)."""
    metrics = build_metrics(run, model, current_frac, slow_step)
    device = next(model.parameters()).device
    with torch.no_grad():
        weight_deltas = model.calc_weight_deltas()
        for _ in range(run.n_eval_steps):
            batch = next(eval_batches).to(device)
            result = model(batch, cache_type="input")
            assert isinstance(result, OutputWithCache)
            ci = model.calc_causal_importances(result.cache, sampling=run.sampling)
            eval_batch = EvalBatch(batch=batch, target_out=result.output, ci=ci, weight_deltas=weight_deltas)
            for metric in metrics:
                metric.update(eval_batch)
        out = EvalResult()
        for metric in metrics:
            res = metric.compute()
            out.scalars.update(res.scalars)
            out.arrays.update(res.arrays)
    return out
