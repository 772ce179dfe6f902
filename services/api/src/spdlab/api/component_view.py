"""`component_stats` rows as API views: token ids decoded with the decomposition's tokenizer
(torch-free `tokenizers`), lists sliced to the requested limits."""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer

from spdlab.api.tokenizer_cache import token_strings
from spdlab.common.contracts.harvest import (
    ActivationExampleOut,
    ComponentDetail,
    ComponentSummary,
    CorrelatedComponent,
    TokenStatsOut,
    TokenValue,
)
from spdlab.common.harvest_tables import ComponentStat


def summary(row: ComponentStat) -> ComponentSummary:
    return ComponentSummary(key=f"{row.layer}:{row.component_idx}", layer=row.layer, component_idx=row.component_idx,
                            firing_count=row.firing_count, firing_density=row.firing_density, mean_ci=row.mean_ci,
                            mean_activation=row.mean_activation)


def _token_stats(table: dict[str, Any] | None, tok: Tokenizer | None, limit: int) -> TokenStatsOut | None:
    if table is None:
        return None

    def values(name: str) -> list[TokenValue]:
        pairs = table.get(name, [])[:limit]
        names = token_strings(tok, [int(t) for t, _ in pairs])
        return [TokenValue(token_id=int(t), token=s, value=float(v)) for (t, v), s in zip(pairs, names, strict=True)]

    return TokenStatsOut(precision=values("precision"), recall=values("recall"), pmi_top=values("pmi_top"),
                         pmi_bottom=values("pmi_bottom"))


def _example(item: dict[str, Any], tok: Tokenizer | None) -> ActivationExampleOut:
    ids = [int(t) for t in item["tokens"]]
    return ActivationExampleOut(token_ids=ids, tokens=list(token_strings(tok, ids)), ci=item["ci"],
                                activation=item["act"], firing_offset=int(item["offset"]))


def _correlated(pairs: list[list[Any]], limit: int) -> list[CorrelatedComponent]:
    out = []
    for key, value in pairs[:limit]:
        layer, _, idx = str(key).rpartition(":")
        out.append(CorrelatedComponent(key=key, layer=layer, component_idx=int(idx), value=float(value)))
    return out


def detail(row: ComponentStat, tok: Tokenizer | None, *, metric: str, correlation_limit: int, examples_limit: int,
           examples_offset: int = 0, token_limit: int = 20) -> ComponentDetail:
    examples = row.examples[examples_offset : examples_offset + examples_limit]
    return ComponentDetail(
        **summary(row).model_dump(),
        n_examples=row.n_examples,
        examples=[_example(e, tok) for e in examples],
        examples_offset=examples_offset,
        input_tokens=_token_stats(row.input_tokens, tok, token_limit),  # type: ignore[arg-type]
        output_tokens=_token_stats(row.output_tokens, tok, token_limit),
        correlation_metric=metric,  # type: ignore[arg-type]
        correlated=_correlated(row.correlations.get(metric, []), correlation_limit),
    )
