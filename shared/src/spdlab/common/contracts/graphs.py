"""Contracts of decomposition import, attribution graphs (standard, manual, optimized), prompts and
interventions: job requests (discriminated on ``kind``), results and API views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spdlab.common.contracts.ids import RowId
from spdlab.common.jobs import params_key

Regime = Literal["ci", "stochastic", "adversarial", "ablated"]
GRAPH_KINDS = ("graph.standard", "graph.manual", "graph.optimized")
NodeKey = Annotated[str, Field(min_length=5, max_length=100, pattern=r"^[A-Za-z0-9_.]+:\d+:\d+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- decomposition import -------------------------------------------------------------------------


class DecompositionImportParams(_Strict):
    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, max_length=1000, description="research-code run dir or spdlab checkpoint dir")


class DecompositionImportJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["decomposition.import"]
    params: DecompositionImportParams


class DecompositionImportResult(BaseModel):
    decomposition_id: int
    summary: dict[str, Any]


# --- graphs ---------------------------------------------------------------------------------------


class _GraphCommon(_Strict):
    prompt_id: RowId
    output_prob_threshold: float = Field(default=0.01, ge=0, le=1)
    max_output_nodes_per_pos: int = Field(default=15, ge=1, le=1000)
    output_top_k: int = Field(default=15, ge=1, le=100, description="top-k output table rows per position")
    # Set by the API to recompute graphs deleted after an identical job succeeded; not part of the key.
    nonce: str | None = Field(default=None, max_length=64)


class StandardGraphParams(_GraphCommon):
    pass


class ManualGraphParams(_GraphCommon):
    included_nodes: list[NodeKey] = Field(min_length=1, max_length=100_000)

    @field_validator("included_nodes")
    @classmethod
    def _canonical_order(cls, nodes: list[str]) -> list[str]:
        return sorted(set(nodes))  # the same node set is the same request


class CELossSpec(_Strict):
    type: Literal["ce"] = "ce"
    position: int = Field(ge=0)
    label_token: int = Field(ge=0)
    coeff: float = Field(default=1.0, gt=0)


class KLLossSpec(_Strict):
    type: Literal["kl"] = "kl"
    position: int = Field(ge=0)
    coeff: float = Field(default=1.0, gt=0)


class LogitLossSpec(_Strict):
    type: Literal["logit"] = "logit"
    position: int = Field(ge=0)
    label_token: int = Field(ge=0)
    coeff: float = Field(default=1.0, gt=0)


LossSpec = Annotated[CELossSpec | KLLossSpec | LogitLossSpec, Field(discriminator="type")]


class LRScheduleSpec(_Strict):
    start_val: float = Field(default=1e-2, gt=0, le=10)
    fn_type: Literal["constant", "linear", "cosine"] = "constant"
    warmup_pct: float = Field(default=0.0, ge=0, le=1)
    final_val_frac: float = Field(default=1.0, ge=0, le=1)


class PGDSpec(_Strict):
    n_steps: int = Field(ge=1, le=200)
    step_size: float = Field(gt=0, le=100)


class OptimizedGraphParams(_GraphCommon):
    loss: LossSpec
    imp_min_coeffs: list[float] = Field(min_length=1, max_length=32, description="one graph per coefficient")
    steps: int = Field(default=2000, ge=1, le=100_000)
    pnorm: float = Field(default=0.3, gt=0, le=2)
    beta: float = Field(default=0.0, ge=0)
    p_anneal_start_frac: float = Field(default=1.0, ge=0, le=1)
    p_anneal_final_p: float | None = Field(default=None, gt=0, le=2)
    p_anneal_end_frac: float = Field(default=1.0, ge=0, le=1)
    mask_type: Literal["ci", "stochastic"] = "stochastic"
    lr: LRScheduleSpec = LRScheduleSpec()
    adv_pgd: PGDSpec | None = None
    seed: int = Field(default=0, ge=0)
    snapshot_every: int | None = Field(default=None, ge=1, description="ci_snapshot event period (steps)")

    @field_validator("imp_min_coeffs")
    @classmethod
    def _positive_distinct(cls, coeffs: list[float]) -> list[float]:
        if any(c <= 0 for c in coeffs):
            raise ValueError("importance-minimality coefficients must be > 0")
        if len(set(coeffs)) != len(coeffs):
            raise ValueError("importance-minimality coefficients must be distinct")
        return coeffs


class StandardGraphJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["graph.standard"]
    params: StandardGraphParams


class ManualGraphJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["graph.manual"]
    params: ManualGraphParams


class OptimizedGraphJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["graph.optimized"]
    params: OptimizedGraphParams


GraphJobRequest = Annotated[
    StandardGraphJobRequest | ManualGraphJobRequest | OptimizedGraphJobRequest, Field(discriminator="kind")
]


def graph_type_of(kind: str) -> str:
    return kind.removeprefix("graph.")


def graph_keys(kind: str, params: BaseModel) -> list[tuple[dict[str, Any], str]]:
    """(stored params, uniqueness key) of every graph a request produces: one per coefficient for
    optimized graphs, so a batch and a single-coefficient request share their graphs. The prompt id
    is the other half of the unique key and is not part of the params key."""
    data = params.model_dump(mode="json", exclude={"prompt_id", "snapshot_every", "nonce"})
    coeffs = data.pop("imp_min_coeffs", None)
    if coeffs is None:
        return [(data, params_key(kind, data))]
    out = []
    for c in coeffs:
        one = {**data, "imp_min_coeff": c}
        out.append((one, params_key(kind, one)))
    return out


class GraphJobResult(BaseModel):
    graph_ids: list[int]
    created: int = Field(description="graphs written by this attempt (the rest already existed)")


class GraphSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    prompt_id: int
    decomposition_id: int
    owner_id: int
    graph_type: str
    params: dict[str, Any]
    params_key: str
    n_nodes: int
    n_edges: int
    n_component_nodes: int
    summary: dict[str, Any]
    job_id: str | None
    created_at: datetime


class GraphSubmitOut(BaseModel):
    """`POST /graphs`: the stored graphs (all present) or the job computing them."""

    status: Literal["stored", "queued", "running"]
    graphs: list[GraphSummary] = []
    job: dict[str, Any] | None = None


class GraphViewOut(GraphSummary):
    """`GET /graphs/{id}`: summary plus the filtered view (columnar lists; edges index `nodes`)."""

    prompt_token_ids: list[int]
    prompt_tokens: list[str]
    nodes: dict[str, list[Any]]
    edges: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    stats: dict[str, Any]
    view: dict[str, Any]


# --- prompts --------------------------------------------------------------------------------------


class PromptCreate(_Strict):
    decomposition_id: RowId
    text: str | None = Field(default=None, max_length=100_000)
    token_ids: list[int] | None = Field(default=None, max_length=100_000)

    @model_validator(mode="after")
    def _one_source(self) -> PromptCreate:
        if (self.text is None) == (self.token_ids is None):
            raise ValueError("give exactly one of text or token_ids")
        return self


class PromptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    decomposition_id: int
    owner_id: int
    text: str
    token_ids: list[int]
    tokens: list[str] = []
    created_at: datetime


class PromptPage(BaseModel):
    items: list[PromptOut]
    total: int
    limit: int
    offset: int


# --- interventions --------------------------------------------------------------------------------


class InterventionParams(_Strict):
    graph_id: RowId
    regimes: list[Regime] = Field(default=["ci", "stochastic", "adversarial"], min_length=1)
    selected_nodes: list[NodeKey] = Field(min_length=1, max_length=100_000)
    nodes_to_ablate: list[NodeKey] | None = Field(default=None, max_length=100_000)
    top_k: int = Field(default=10, ge=1, le=100)
    loss: LossSpec | None = Field(default=None, description="default: mean KL over positions")
    pgd: PGDSpec | None = Field(default=None, description="adversarial regime; default 4 steps of 1.0")
    seed: int = Field(default=0, ge=0)
    nonce: str | None = Field(default=None, max_length=64)

    @field_validator("regimes", "selected_nodes")
    @classmethod
    def _sorted_set(cls, values: list[str]) -> list[str]:
        return sorted(set(values))

    @model_validator(mode="after")
    def _ablation_needs_nodes(self) -> InterventionParams:
        if "ablated" in self.regimes and not self.nodes_to_ablate:
            raise ValueError("the 'ablated' regime needs nodes_to_ablate")
        if self.nodes_to_ablate is not None:
            self.nodes_to_ablate = sorted(set(self.nodes_to_ablate))
        return self


class InterventionJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["intervention"]
    params: InterventionParams


def intervention_key(params: InterventionParams) -> str:
    return params_key("intervention", params.model_dump(mode="json", exclude={"graph_id", "nonce"}))


class InterventionJobResult(BaseModel):
    intervention_id: int


class InterventionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    graph_id: int
    owner_id: int
    params: dict[str, Any]
    params_key: str
    result: dict[str, Any]
    job_id: str | None
    created_at: datetime


class InterventionSubmitOut(BaseModel):
    status: Literal["stored", "queued", "running"]
    intervention: InterventionOut | None = None
    job: dict[str, Any] | None = None
