"""Interventions: run a prompt with chosen components kept or removed (app_backend §4.2).

Four masking regimes over the decomposed layers:

- `ci`: selected nodes mask 1, every other component and every weight delta off;
- `stochastic`: selected nodes 1, every other component U(0,1), deltas off;
- `adversarial`: selected nodes 1, alive-but-unselected components chosen by PGD to maximise the loss,
  dead components U(0,1) drawn after PGD, deltas off;
- `ablated` ("target-sans", only when `nodes_to_ablate` is given): every mask 1 with the weight deltas
  on (the target model) except the listed nodes, which are 0.

Selected nodes must exist and be alive (CI > 0); otherwise `InvalidNodesError` lists all offenders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from spdlab.core.attribution import node_masks
from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.graph import InvalidNodesError, NodeRef, parse_node_keys
from spdlab.core.mask_pgd import interpolated_mask_infos, pgd_ascent
from spdlab.core.masks import Sampling, make_mask_infos
from spdlab.core.optimize_ci import PGDSettings
from spdlab.core.prompt_losses import (
    MeanKLLoss,
    PromptLoss,
    label_probability,
    label_token,
    loss_position,
    prompt_loss,
    validate_loss,
)
from spdlab.core.topology import TransformerTopology

NodeSpec = str | NodeRef | tuple[str, int, int]
REGIMES = ("ci", "stochastic", "adversarial", "ablated")


@dataclass(frozen=True)
class TokenPrediction:
    token_id: int
    prob: float
    logit: float
    target_prob: float
    target_logit: float
    token: str | None = None


@dataclass(frozen=True)
class RegimeResult:
    """Top-k predictions per position (`predictions[pos][rank]`), the loss and the label probability."""

    predictions: list[list[TokenPrediction]]
    loss: float
    label_prob: float | None


@dataclass(frozen=True)
class InterventionResult:
    token_ids: list[int]
    ci: RegimeResult
    stochastic: RegimeResult
    adversarial: RegimeResult
    ablated: RegimeResult | None
    label_position: int | None
    label_token: int | None


def compute_intervention(
    model: ComponentModel,
    tokens: Tensor,
    selected_nodes: Sequence[NodeSpec],
    *,
    topology: TransformerTopology,
    sampling: Sampling,
    loss: PromptLoss | None = None,
    nodes_to_ablate: Sequence[NodeSpec] | None = None,
    top_k: int = 10,
    pgd: PGDSettings | None = None,
    seed: int = 0,
    decode: Callable[[int], str] | None = None,
) -> InterventionResult:
    """Run the four regimes on prompt `tokens` (`[S]` or `[1, S]`).

    Nodes are canonical keys (`"0.mlp.up:3:5"`), `NodeRef`s or `(layer, pos, c)` tuples. `loss`
    defaults to mean KL over positions; `pgd` to 4 steps of size 1.0 (the research app's eval PGD).
    `decode` renders token strings. Every random draw comes from `torch.Generator(seed)`.
    """
    device = next(model.parameters()).device
    tokens = tokens.reshape(1, -1).to(device=device, dtype=torch.long)
    loss = loss or MeanKLLoss()
    pgd = pgd or PGDSettings(n_steps=4, step_size=1.0)
    gen = torch.Generator(device=device).manual_seed(seed)
    seq = tokens.shape[1]

    with torch.no_grad():
        out = model(tokens, cache_type="input")
        assert isinstance(out, OutputWithCache)
        target_logits = out.output[0]
        validate_loss(loss, seq, target_logits.shape[-1])
        ci = model.calc_causal_importances(out.cache, sampling=sampling, generator=gen).lower_leaky
        alive = {p: c[0] > 0 for p, c in ci.items()}
        selected = _selected_alive(selected_nodes, alive, topology, model, seq, device)
        run = _Runner(model, tokens, target_logits, loss, top_k, decode)
        ci_res = run.regime(make_mask_infos({p: s.float()[None] for p, s in selected.items()}))
        stoch_masks = {
            p: torch.where(s, 1.0, torch.rand(s.shape, generator=gen, device=device))[None] for p, s in selected.items()
        }
        stoch_res = run.regime(make_mask_infos(stoch_masks))
        adv_res = run.regime(_adversarial_masks(run, selected, alive, pgd, gen))
        ablated_res = None
        if nodes_to_ablate is not None:
            ablate = node_masks(nodes_to_ablate, topology, model, seq)
            deltas = model.calc_weight_deltas()
            masks = {p: (~ablate[p].to(device)).float()[None] for p in model.target_module_paths}
            delta_masks = {p: WeightDeltaAndMask(d, torch.ones(1, seq, device=device)) for p, d in deltas.items()}
            ablated_res = run.regime(make_mask_infos(masks, "all", delta_masks))
    return InterventionResult(
        token_ids=tokens[0].tolist(),
        ci=ci_res,
        stochastic=stoch_res,
        adversarial=adv_res,
        ablated=ablated_res,
        label_position=loss_position(loss) if label_token(loss) is not None else None,
        label_token=label_token(loss),
    )


def _selected_alive(
    nodes: Sequence[NodeSpec],
    alive: dict[str, Tensor],
    topology: TransformerTopology,
    model: ComponentModel,
    seq: int,
    device: torch.device,
) -> dict[str, Tensor]:
    """Selection masks `[S, C]`; one `InvalidNodesError` lists every missing and every dead node."""
    refs = parse_node_keys(nodes)
    try:
        missing: list[str] = []
        masks = node_masks(refs, topology, model, seq)
    except InvalidNodesError as err:
        missing = err.nodes
        masks = node_masks([r for r in refs if r.key not in set(missing)], topology, model, seq)
    selected = {p: m.to(device) for p, m in masks.items()}
    names = topology.canonical_names(model.target_module_paths)
    dead = [f"{names[p]}:{s}:{c}" for p, m in selected.items() for s, c in (m & ~alive[p]).nonzero().tolist()]
    if missing or dead:
        raise InvalidNodesError(
            missing + dead, f"{len(missing)} not in this model/prompt, {len(dead)} not alive (CI = 0)"
        )
    return selected


@dataclass
class _Runner:
    model: ComponentModel
    tokens: Tensor
    target_logits: Tensor
    loss: PromptLoss
    top_k: int
    decode: Callable[[int], str] | None

    def logits(self, mask_infos: dict) -> Tensor:
        out = self.model(self.tokens, mask_infos=mask_infos)
        assert isinstance(out, Tensor)
        return out

    def regime(self, mask_infos: dict) -> RegimeResult:
        logits = self.logits(mask_infos)
        label = label_probability(self.loss, logits)
        return RegimeResult(
            predictions=top_k_predictions(logits[0], self.target_logits, self.top_k, self.decode),
            loss=float(prompt_loss(self.loss, logits, self.target_logits)[0]),
            label_prob=None if label is None else float(label[0]),
        )


def _adversarial_masks(
    run: _Runner, selected: dict[str, Tensor], alive: dict[str, Tensor], pgd: PGDSettings, gen: torch.Generator
) -> dict:
    """PGD ascent over alive-but-unselected entries (dead at 0 meanwhile); then dead entries ~ U(0,1)."""
    base = {p: s.float()[None] for p, s in selected.items()}
    trainable = {p: (alive[p] & ~s)[None] for p, s in selected.items()}
    init = {p: torch.rand(b.shape, generator=gen, device=b.device) * trainable[p] for p, b in base.items()}
    sources = pgd_ascent(
        lambda s: prompt_loss(run.loss, run.logits(interpolated_mask_infos(base, s)), run.target_logits),
        init, trainable, pgd.n_steps, pgd.step_size,
    )
    dead = {p: ~a[None] for p, a in alive.items()}
    sources = {
        p: torch.where(dead[p], torch.rand(s.shape, generator=gen, device=s.device), s) for p, s in sources.items()
    }
    return interpolated_mask_infos(base, sources)


def top_k_predictions(
    logits: Tensor, target_logits: Tensor, k: int, decode: Callable[[int], str] | None = None
) -> list[list[TokenPrediction]]:
    """Top-k tokens per position by the masked model's probability, with the target's values."""
    probs = logits.softmax(-1)
    top_p, top_i = probs.topk(min(k, probs.shape[-1]), dim=-1)
    rows = torch.arange(probs.shape[0], device=probs.device)[:, None]
    columns = [
        top_i, top_p, logits[rows, top_i], target_logits.softmax(-1)[rows, top_i], target_logits[rows, top_i]
    ]
    ids, p, lg, tp, tl = (c.tolist() for c in columns)  # one host transfer per column, not per entry
    return [
        [
            TokenPrediction(t, p[s][r], lg[s][r], tp[s][r], tl[s][r], None if decode is None else decode(t))
            for r, t in enumerate(ids[s])
        ]
        for s in range(len(ids))
    ]
