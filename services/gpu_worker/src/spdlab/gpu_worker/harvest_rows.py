"""A finalized harvest as `component_stats` rows (canonical layer names, token ids, compact JSON).

Each per-component tensor is moved to Python once (`.tolist()` on the whole `[C, k]` table), then
rows are sliced from those lists; examples come from the reservoir tensors the same way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spdlab.core.harvest.stats import HarvestResult, TokenStats, TopLists

CI_TYPE = "causal_importance"
ACT_TYPE = "component_activation"


def layer_names(result: HarvestResult) -> list[str]:
    """Canonical name per layer (concrete path where the topology has no canonical name)."""
    return [layer.canonical or layer.name for layer in result.layers]


def flat_keys(result: HarvestResult) -> list[tuple[str, int]]:
    return [(name, i) for name, layer in zip(layer_names(result), result.layers, strict=True)
            for i in range(layer.n_components)]


def _rows_of(lists: TopLists) -> list[list[list[float]]]:
    """`[C]` lists of `[id, value]` pairs, padding dropped."""
    ids, values = lists.ids.tolist(), lists.values.tolist()
    return [[[i, v] for i, v in zip(r_ids, r_vals, strict=True) if i >= 0] for r_ids, r_vals in zip(ids, values,
                                                                                                    strict=True)]


def _token_tables(stats: TokenStats | None, n: int) -> list[dict[str, Any] | None]:
    if stats is None:
        return [None] * n
    tables = {name: _rows_of(getattr(stats, f"{name}_top" if name in ("precision", "recall") else name))
              for name in ("precision", "recall", "pmi_top", "pmi_bottom")}
    return [{name: rows[c] for name, rows in tables.items()} for c in range(n)]


def _examples(result: HarvestResult) -> list[list[dict[str, Any]]]:
    """Per component: filled reservoir slots in key order, edge padding stripped."""
    import torch

    from spdlab.core.harvest.reservoir import EMPTY_KEY

    res = result.reservoir
    order = torch.argsort(res.keys, dim=1).cpu()
    keys = torch.gather(res.keys.cpu(), 1, order).tolist()
    tokens = torch.gather(res.tokens.cpu(), 1, order[..., None].expand_as(res.tokens.cpu())).tolist()
    acts = {t: torch.gather(a.cpu(), 1, order[..., None].expand_as(a.cpu())).tolist() for t, a in res.acts.items()}
    h = res.context_per_side
    out: list[list[dict[str, Any]]] = []
    for c, row_keys in enumerate(keys):
        items = []
        for j, key in enumerate(row_keys):
            if key == EMPTY_KEY:
                break
            toks = tokens[c][j]
            keep = [p for p, t in enumerate(toks) if t >= 0]
            items.append({
                "tokens": [toks[p] for p in keep],
                "ci": [acts[CI_TYPE][c][j][p] for p in keep],
                "act": [acts[ACT_TYPE][c][j][p] for p in keep],
                "offset": h - sum(1 for p in range(h + 1) if toks[p] < 0),
            })
        out.append(items)
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def component_rows(result: HarvestResult, harvest_id: int) -> list[dict[str, Any]]:
    """Insertable dicts for `component_stats`, in flat component order."""
    keys = flat_keys(result)
    key_str = [f"{layer}:{idx}" for layer, idx in keys]
    n = len(keys)
    counts = result.firing_counts.tolist()
    density = result.firing_density.tolist()
    mean_ci = result.mean_activations[CI_TYPE].tolist()
    mean_act = result.mean_activations[ACT_TYPE].tolist()
    inputs = _token_tables(result.input_stats, n)
    outputs = _token_tables(result.output_stats, n)
    corr = {m: _rows_of(lists) for m, lists in result.correlations.items()}
    examples = _examples(result)
    return [
        {
            "harvest_id": harvest_id,
            "layer": keys[c][0],
            "component_idx": keys[c][1],
            "firing_count": int(counts[c]),
            "firing_density": density[c],
            "mean_ci": _finite(mean_ci[c]),
            "mean_activation": _finite(mean_act[c]),
            "input_tokens": inputs[c],
            "output_tokens": outputs[c],
            "correlations": {m: [[key_str[int(j)], v] for j, v in rows[c]] for m, rows in corr.items()},
            "examples": examples[c],
            "n_examples": len(examples[c]),
        }
        for c in range(n)
    ]
