"""Harvest configuration (a frozen pydantic model, stored with every harvest run)."""

from pydantic import BaseModel, ConfigDict, Field


class HarvestConfig(BaseModel):
    """What a harvest computes; every shard of a run must use the same config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    activation_threshold: float = Field(default=0.0, description="a component fires where its firing value is > this")
    examples_per_component: int = Field(default=400, ge=0, description="reservoir size per component")
    context_tokens_per_side: int = Field(default=20, ge=0, description="window = 2·this + 1 tokens")
    batch_size: int = Field(default=32, ge=1)
    top_k_tokens: int = Field(default=40, ge=1, description="length of top/bottom token lists")
    top_k_correlations: int = Field(default=20, ge=1, description="length of correlated-component lists")
    pmi_min_count: float = Field(default=0.0, ge=0.0, description="drop tokens below this co-occurrence from PMI lists")
    output_token_stats: bool = Field(default=True, description="accumulate next-token probability mass [C, V]")
    seed: int = Field(default=0, description="seeds the reservoir's per-firing keys")
