"""The SPD run config (research code: `spd/configs.py`), as pydantic v2 models.

It lives in the shared package (no torch) so the API can validate decompose requests.

Field names and order follow the research code so a run's `final_config.yaml` parses and
`Config.model_dump(mode="json")` writes it back unchanged. Legacy keys are migrated by pure
functions on dicts (`migrate_config_dict`) before validation (spec §4.7). No torch here.
"""

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class BaseConfig(BaseModel):
    """Research configs forbid unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=False)


# --- CI function configs -------------------------------------------------------------------------


class LayerwiseCiConfig(BaseConfig):
    mode: Literal["layerwise"] = "layerwise"
    fn_type: Literal["mlp", "vector_mlp", "shared_mlp"]
    hidden_dims: list[PositiveInt]

    @model_validator(mode="after")
    def _check_hidden_dims(self) -> Self:
        if self.fn_type in ("mlp", "vector_mlp") and not self.hidden_dims:
            raise ValueError(f"hidden_dims must be non-empty for fn_type={self.fn_type!r}")
        return self


class AttnConfig(BaseConfig):
    n_heads: PositiveInt
    max_len: PositiveInt = 2048
    rope_base: float = 10000.0


class GlobalSharedTransformerCiConfig(BaseConfig):
    d_model: PositiveInt
    n_blocks: PositiveInt
    mlp_hidden_dim: list[PositiveInt] | None = None
    attn_config: AttnConfig

    @model_validator(mode="after")
    def _check_heads(self) -> Self:
        if self.d_model % self.attn_config.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.attn_config.n_heads}")
        if (self.d_model // self.attn_config.n_heads) % 2:
            raise ValueError("d_head must be even for RoPE")
        return self


class BlockGroupConfig(BaseConfig):
    name: str
    patterns: list[str]


class GlobalCiConfig(BaseConfig):
    mode: Literal["global"] = "global"
    fn_type: Literal["global_shared_mlp", "global_reverse_residual", "global_shared_transformer"]
    hidden_dims: list[PositiveInt] | None = None
    reader_hidden_dims: list[PositiveInt] | None = None
    d_resid_ci_fn: PositiveInt | None = None
    block_groups: list[BlockGroupConfig] | None = None
    transition_attn_config: AttnConfig | None = None
    transition_hidden_dim: PositiveInt | None = None
    simple_transformer_ci_cfg: GlobalSharedTransformerCiConfig | None = None

    @model_validator(mode="after")
    def _check_fields_for_type(self) -> Self:
        required = {
            "global_shared_mlp": ["hidden_dims"],
            "global_reverse_residual": ["d_resid_ci_fn", "reader_hidden_dims", "block_groups"],
            "global_shared_transformer": ["simple_transformer_ci_cfg"],
        }[self.fn_type]
        missing = [f for f in required if getattr(self, f) is None]
        if missing:
            raise ValueError(f"ci_config fn_type={self.fn_type!r} requires {missing}")
        attn = self.transition_attn_config
        d_resid = self.d_resid_ci_fn
        if attn is not None and d_resid is not None and (d_resid % attn.n_heads or (d_resid // attn.n_heads) % 2):
            raise ValueError("d_resid_ci_fn must split into an even head dim for transition attention")
        return self


CiConfig = Annotated[LayerwiseCiConfig | GlobalCiConfig, Field(discriminator="mode")]


# --- schedules, modules, routing ---------------------------------------------------------------


class ScheduleConfig(BaseConfig):
    start_val: float
    warmup_pct: float = 0.0
    final_val_frac: float = 1.0
    fn_type: Literal["constant", "cosine", "linear"] = "constant"

    @model_validator(mode="after")
    def _constant_is_flat(self) -> Self:
        if self.fn_type == "constant" and self.final_val_frac != 1.0:
            raise ValueError("constant schedule requires final_val_frac == 1.0")
        return self


class ModulePatternInfoConfig(BaseConfig):
    module_pattern: str
    C: PositiveInt


class UniformKSubsetRoutingConfig(BaseConfig):
    type: Literal["uniform_k_subset"] = "uniform_k_subset"


class StaticProbabilityRoutingConfig(BaseConfig):
    type: Literal["static_probability"] = "static_probability"
    p: float


SubsetRouting = Annotated[UniformKSubsetRoutingConfig | StaticProbabilityRoutingConfig, Field(discriminator="type")]


# --- loss / metric configs (discriminated on `classname`) ----------------------------------------


class LossMetricConfig(BaseConfig):
    coeff: float | None = None


class FaithfulnessLossConfig(LossMetricConfig):
    classname: Literal["FaithfulnessLoss"] = "FaithfulnessLoss"


class ImportanceMinimalityLossConfig(LossMetricConfig):
    classname: Literal["ImportanceMinimalityLoss"] = "ImportanceMinimalityLoss"
    pnorm: float
    beta: float = 0.0
    p_anneal_start_frac: float = 1.0
    p_anneal_final_p: float | None = None
    p_anneal_end_frac: float = 1.0
    eps: float = 1e-12


class UnmaskedReconLossConfig(LossMetricConfig):
    classname: Literal["UnmaskedReconLoss"] = "UnmaskedReconLoss"


class CIMaskedReconLossConfig(LossMetricConfig):
    classname: Literal["CIMaskedReconLoss"] = "CIMaskedReconLoss"


class CIMaskedReconLayerwiseLossConfig(LossMetricConfig):
    classname: Literal["CIMaskedReconLayerwiseLoss"] = "CIMaskedReconLayerwiseLoss"


class CIMaskedReconSubsetLossConfig(LossMetricConfig):
    classname: Literal["CIMaskedReconSubsetLoss"] = "CIMaskedReconSubsetLoss"
    routing: SubsetRouting = Field(default_factory=UniformKSubsetRoutingConfig)


class StochasticReconLossConfig(LossMetricConfig):
    classname: Literal["StochasticReconLoss"] = "StochasticReconLoss"


class StochasticReconLayerwiseLossConfig(LossMetricConfig):
    classname: Literal["StochasticReconLayerwiseLoss"] = "StochasticReconLayerwiseLoss"


class StochasticReconSubsetLossConfig(LossMetricConfig):
    classname: Literal["StochasticReconSubsetLoss"] = "StochasticReconSubsetLoss"
    routing: SubsetRouting = Field(default_factory=UniformKSubsetRoutingConfig)


class PGDConfig(LossMetricConfig):
    init: Literal["random", "ones", "zeroes"]
    step_size: float
    n_steps: PositiveInt
    mask_scope: Literal["unique_per_datapoint", "shared_across_batch"]


class PGDReconLossConfig(PGDConfig):
    classname: Literal["PGDReconLoss"] = "PGDReconLoss"


class PGDReconLayerwiseLossConfig(PGDConfig):
    classname: Literal["PGDReconLayerwiseLoss"] = "PGDReconLayerwiseLoss"


class PGDReconSubsetLossConfig(PGDConfig):
    classname: Literal["PGDReconSubsetLoss"] = "PGDReconSubsetLoss"
    routing: SubsetRouting = Field(default_factory=UniformKSubsetRoutingConfig)


class PGDMultiBatchConfig(LossMetricConfig):
    init: Literal["random", "ones", "zeroes"]
    step_size: float
    n_steps: PositiveInt
    gradient_accumulation_steps: PositiveInt


class PGDMultiBatchReconLossConfig(PGDMultiBatchConfig):
    classname: Literal["PGDMultiBatchReconLoss"] = "PGDMultiBatchReconLoss"


class PGDMultiBatchReconSubsetLossConfig(PGDMultiBatchConfig):
    classname: Literal["PGDMultiBatchReconSubsetLoss"] = "PGDMultiBatchReconSubsetLoss"
    routing: SubsetRouting = Field(default_factory=UniformKSubsetRoutingConfig)


class StochasticHiddenActsReconLossConfig(LossMetricConfig):
    classname: Literal["StochasticHiddenActsReconLoss"] = "StochasticHiddenActsReconLoss"


class SignPGDConfig(BaseConfig):
    type: Literal["sign"] = "sign"
    lr_schedule: ScheduleConfig


class AdamPGDConfig(BaseConfig):
    type: Literal["adam"] = "adam"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    lr_schedule: ScheduleConfig


class SingleSourceScope(BaseConfig):
    type: Literal["single_source"] = "single_source"


class BroadcastAcrossBatchScope(BaseConfig):
    type: Literal["broadcast_across_batch"] = "broadcast_across_batch"


class RepeatAcrossBatchScope(BaseConfig):
    type: Literal["repeat_across_batch"] = "repeat_across_batch"
    n_sources: PositiveInt


class PerBatchPerPositionScope(BaseConfig):
    type: Literal["per_batch_per_position"] = "per_batch_per_position"


PPGDScope = Annotated[
    SingleSourceScope | BroadcastAcrossBatchScope | RepeatAcrossBatchScope | PerBatchPerPositionScope,
    Field(discriminator="type"),
]
PGDOptimizerConfig = Annotated[SignPGDConfig | AdamPGDConfig, Field(discriminator="type")]


class PersistentPGDBaseConfig(LossMetricConfig):
    optimizer: PGDOptimizerConfig
    scope: PPGDScope
    use_sigmoid_parameterization: bool = False
    n_warmup_steps: int = 0
    start_frac: float = 0.0
    n_samples: PositiveInt = 1


class PersistentPGDReconLossConfig(PersistentPGDBaseConfig):
    classname: Literal["PersistentPGDReconLoss"] = "PersistentPGDReconLoss"


class PersistentPGDReconSubsetLossConfig(PersistentPGDBaseConfig):
    classname: Literal["PersistentPGDReconSubsetLoss"] = "PersistentPGDReconSubsetLoss"
    routing: SubsetRouting = Field(default_factory=UniformKSubsetRoutingConfig)


# Eval-only metrics.


class CEandKLLossesConfig(BaseConfig):
    classname: Literal["CEandKLLosses"] = "CEandKLLosses"
    rounding_threshold: float


class CI_L0Config(BaseConfig):
    classname: Literal["CI_L0"] = "CI_L0"
    groups: dict[str, list[str]] | None = None


class CIHistogramsConfig(BaseConfig):
    classname: Literal["CIHistograms"] = "CIHistograms"
    n_batches_accum: int | None = None


class CIMeanPerComponentConfig(BaseConfig):
    classname: Literal["CIMeanPerComponent"] = "CIMeanPerComponent"


class ComponentActivationDensityConfig(BaseConfig):
    classname: Literal["ComponentActivationDensity"] = "ComponentActivationDensity"


class IdentityCIErrorConfig(BaseConfig):
    classname: Literal["IdentityCIError"] = "IdentityCIError"
    identity_ci: list[dict[str, str | int]] | None = None
    dense_ci: list[dict[str, str | int]] | None = None


class PermutedCIPlotsConfig(BaseConfig):
    classname: Literal["PermutedCIPlots"] = "PermutedCIPlots"
    identity_patterns: list[str] | None = None
    dense_patterns: list[str] | None = None


class UVPlotsConfig(BaseConfig):
    classname: Literal["UVPlots"] = "UVPlots"
    identity_patterns: list[str] | None = None
    dense_patterns: list[str] | None = None


class StochasticReconSubsetCEAndKLConfig(BaseConfig):
    classname: Literal["StochasticReconSubsetCEAndKL"] = "StochasticReconSubsetCEAndKL"
    include_patterns: dict[str, list[str]] | None = None
    exclude_patterns: dict[str, list[str]] | None = None


class CIHiddenActsReconLossConfig(BaseConfig):
    classname: Literal["CIHiddenActsReconLoss"] = "CIHiddenActsReconLoss"


class PersistentPGDReconEvalConfig(BaseConfig):
    classname: Literal["PersistentPGDReconEval"] = "PersistentPGDReconEval"


class PersistentPGDReconSubsetEvalConfig(BaseConfig):
    classname: Literal["PersistentPGDReconSubsetEval"] = "PersistentPGDReconSubsetEval"


class AttnPatternsReconBaseConfig(BaseConfig):
    # Field set not pinned down by the spec: accept what a run wrote.
    model_config = ConfigDict(extra="allow")


class CIMaskedAttnPatternsReconLossConfig(AttnPatternsReconBaseConfig):
    classname: Literal["CIMaskedAttnPatternsReconLoss"] = "CIMaskedAttnPatternsReconLoss"


class StochasticAttnPatternsReconLossConfig(AttnPatternsReconBaseConfig):
    classname: Literal["StochasticAttnPatternsReconLoss"] = "StochasticAttnPatternsReconLoss"


LOSS_CONFIG_CLASSES: tuple[type[BaseConfig], ...] = (
    FaithfulnessLossConfig, ImportanceMinimalityLossConfig, UnmaskedReconLossConfig,
    CIMaskedReconLossConfig, CIMaskedReconLayerwiseLossConfig, CIMaskedReconSubsetLossConfig,
    StochasticReconLossConfig, StochasticReconLayerwiseLossConfig, StochasticReconSubsetLossConfig,
    PGDReconLossConfig, PGDReconLayerwiseLossConfig, PGDReconSubsetLossConfig,
    PGDMultiBatchReconLossConfig, PGDMultiBatchReconSubsetLossConfig,
    StochasticHiddenActsReconLossConfig, PersistentPGDReconLossConfig, PersistentPGDReconSubsetLossConfig,
)
EVAL_ONLY_CONFIG_CLASSES: tuple[type[BaseConfig], ...] = (
    CEandKLLossesConfig, CI_L0Config, CIHistogramsConfig, CIMeanPerComponentConfig,
    ComponentActivationDensityConfig, IdentityCIErrorConfig, PermutedCIPlotsConfig, UVPlotsConfig,
    StochasticReconSubsetCEAndKLConfig, CIHiddenActsReconLossConfig, PersistentPGDReconEvalConfig,
    PersistentPGDReconSubsetEvalConfig, CIMaskedAttnPatternsReconLossConfig,
    StochasticAttnPatternsReconLossConfig,
)


def _classname(cls: type[BaseConfig]) -> str:
    return cls.model_fields["classname"].default


LOSS_CLASSNAMES = frozenset(_classname(c) for c in LOSS_CONFIG_CLASSES)
METRIC_CLASSNAMES = LOSS_CLASSNAMES | {_classname(c) for c in EVAL_ONLY_CONFIG_CLASSES}

LossMetricConfigType = Annotated[
    FaithfulnessLossConfig | ImportanceMinimalityLossConfig | UnmaskedReconLossConfig
    | CIMaskedReconLossConfig | CIMaskedReconLayerwiseLossConfig | CIMaskedReconSubsetLossConfig
    | StochasticReconLossConfig | StochasticReconLayerwiseLossConfig | StochasticReconSubsetLossConfig
    | PGDReconLossConfig | PGDReconLayerwiseLossConfig | PGDReconSubsetLossConfig
    | PGDMultiBatchReconLossConfig | PGDMultiBatchReconSubsetLossConfig
    | StochasticHiddenActsReconLossConfig | PersistentPGDReconLossConfig | PersistentPGDReconSubsetLossConfig,
    Field(discriminator="classname"),
]
MetricConfigType = Annotated[
    FaithfulnessLossConfig | ImportanceMinimalityLossConfig | UnmaskedReconLossConfig
    | CIMaskedReconLossConfig | CIMaskedReconLayerwiseLossConfig | CIMaskedReconSubsetLossConfig
    | StochasticReconLossConfig | StochasticReconLayerwiseLossConfig | StochasticReconSubsetLossConfig
    | PGDReconLossConfig | PGDReconLayerwiseLossConfig | PGDReconSubsetLossConfig
    | PGDMultiBatchReconLossConfig | PGDMultiBatchReconSubsetLossConfig
    | StochasticHiddenActsReconLossConfig | PersistentPGDReconLossConfig | PersistentPGDReconSubsetLossConfig
    | CEandKLLossesConfig | CI_L0Config | CIHistogramsConfig | CIMeanPerComponentConfig
    | ComponentActivationDensityConfig | IdentityCIErrorConfig | PermutedCIPlotsConfig | UVPlotsConfig
    | StochasticReconSubsetCEAndKLConfig | CIHiddenActsReconLossConfig | PersistentPGDReconEvalConfig
    | PersistentPGDReconSubsetEvalConfig | CIMaskedAttnPatternsReconLossConfig
    | StochasticAttnPatternsReconLossConfig,
    Field(discriminator="classname"),
]


# --- task configs --------------------------------------------------------------------------------


class TMSTaskConfig(BaseConfig):
    task_name: Literal["tms"] = "tms"
    feature_probability: float
    data_generation_type: str = "at_least_zero_active"


class ResidMLPTaskConfig(BaseConfig):
    task_name: Literal["resid_mlp"] = "resid_mlp"
    feature_probability: float
    data_generation_type: str = "at_least_zero_active"


class LMTaskConfig(BaseConfig):
    task_name: Literal["lm"] = "lm"
    max_seq_len: PositiveInt = 512
    buffer_size: PositiveInt = 1000
    dataset_name: str = "lennart-finke/SimpleStories"
    column_name: str = "story"
    train_data_split: str = "train"
    eval_data_split: str = "test"
    shuffle_each_epoch: bool = True
    is_tokenized: bool = False
    streaming: bool = False
    dataset_seed: int | None = None


TaskConfig = Annotated[TMSTaskConfig | ResidMLPTaskConfig | LMTaskConfig, Field(discriminator="task_name")]


# --- the run config ------------------------------------------------------------------------------


class Config(BaseConfig):
    wandb_project: str | None = None
    wandb_run_name: str | None = None
    wandb_run_name_prefix: str = ""
    seed: int = 0
    autocast_bf16: bool = True
    n_mask_samples: PositiveInt
    ci_config: CiConfig
    sampling: Literal["continuous", "binomial"] = "continuous"
    sigmoid_type: Literal["normal", "hard", "leaky_hard", "upper_leaky_hard", "swish_hard"] = "leaky_hard"
    module_info: list[ModulePatternInfoConfig]
    identity_module_info: list[ModulePatternInfoConfig] | None = None
    init_spd_checkpoint: str | None = None
    use_delta_component: bool = True
    loss_metric_configs: list[LossMetricConfigType] = Field(default_factory=list)
    output_loss_type: Literal["mse", "kl"]
    lr_schedule: ScheduleConfig
    steps: int
    batch_size: PositiveInt
    grad_clip_norm_components: float | None = None
    grad_clip_norm_ci_fns: float | None = None
    faithfulness_warmup_steps: int = 0
    faithfulness_warmup_lr: float = 0.001
    faithfulness_warmup_weight_decay: float = 0.0
    train_log_freq: PositiveInt = 50
    eval_freq: PositiveInt
    eval_batch_size: PositiveInt
    slow_eval_freq: PositiveInt
    n_eval_steps: PositiveInt
    slow_eval_on_first_step: bool = True
    save_freq: PositiveInt | None = None
    eval_metric_configs: list[MetricConfigType] = Field(default_factory=list)
    ci_alive_threshold: float = 0.0
    pretrained_model_class: str
    pretrained_model_path: str | None = None
    pretrained_model_name: str | None = None
    pretrained_model_output_attr: str | None = None
    tokenizer_name: str | None = None
    task_config: TaskConfig

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return migrate_config_dict(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.slow_eval_freq % self.eval_freq:
            raise ValueError("slow_eval_freq must be a multiple of eval_freq")
        ppgd = {"PersistentPGDReconLoss", "PersistentPGDReconSubsetLoss"}
        if self.task_config.task_name != "lm" and any(c.classname in ppgd for c in self.loss_metric_configs):
            raise ValueError("persistent PGD losses are only supported for LM tasks")
        return self

    @property
    def all_module_info(self) -> list[ModulePatternInfoConfig]:
        """`module_info` plus a `<pattern>.pre_identity` entry per identity pattern."""
        extra = [
            ModulePatternInfoConfig(module_pattern=f"{m.module_pattern}.pre_identity", C=m.C)
            for m in self.identity_module_info or []
        ]
        return [*self.module_info, *extra]


# --- legacy-key migrations (pure functions on dicts) -------------------------------------------

DEPRECATED_CONFIG_KEYS = frozenset({
    "image_on_first_step", "image_freq", "metrics_fns", "figures_fns", "schatten_coeff",
    "embedding_recon_coeff", "is_embed_unembed_recon", "out_recon_coeff", "faithfulness_coeff",
    "stochastic_recon_coeff", "stochastic_recon_layerwise_coeff", "recon_coeff", "recon_layerwise_coeff",
    "ci_recon_coeff", "ci_recon_layerwise_coeff", "pnorm", "p_anneal_start_frac", "p_anneal_final_p",
    "p_anneal_end_frac", "importance_minimality_coeff", "dist_backend", "n_examples_until_dead",
    "out_dir", "lr_exponential_halflife", "gradient_accumulation_steps",
})
RENAMED_CONFIG_KEYS = {
    "print_freq": "eval_freq",
    "pretrained_model_name_hf": "pretrained_model_name",
    "grad_clip_norm": "grad_clip_norm_components",
    "gate_type": "ci_fn_type",
    "gate_hidden_dims": "ci_fn_hidden_dims",
}
LEGACY_PPGD_SCOPES = {
    "single_mask": "single_source",
    "batch_invariant": "repeat_across_batch",
    "per_batch": "broadcast_across_batch",
    "unique_per_batch_per_token": "per_batch_per_position",
}
GLOBAL_FN_TYPES = {"global_shared_mlp", "global_reverse_residual", "global_shared_transformer"}


def _rename_and_drop(d: dict[str, Any]) -> dict[str, Any]:
    d.pop("eval_metrics", None)
    out: dict[str, Any] = {}
    for key, val in d.items():
        if key in DEPRECATED_CONFIG_KEYS:
            continue
        out[RENAMED_CONFIG_KEYS.get(key, key)] = val
    return out


def _migrate_module_info(d: dict[str, Any]) -> None:
    if "target_module_patterns" in d and "module_info" not in d:
        C = d.pop("C")
        d["module_info"] = [{"module_pattern": p, "C": C} for p in d.pop("target_module_patterns")]
        ids = d.pop("identity_module_patterns", None)
        d["identity_module_info"] = None if ids is None else [{"module_pattern": p, "C": C} for p in ids]
    d.pop("C", None)
    d.pop("target_module_patterns", None)
    d.pop("identity_module_patterns", None)


def _migrate_ci_config(d: dict[str, Any]) -> None:
    legacy = {k: d.pop(k) for k in ("ci_fn_type", "ci_fn_hidden_dims", "use_global_ci") if k in d}
    if "ci_config" in d or not legacy:
        return
    fn_type = legacy.get("ci_fn_type") or "vector_mlp"
    dims = legacy.get("ci_fn_hidden_dims")
    dims = [8] if dims is None else dims
    if legacy.get("use_global_ci") or fn_type in GLOBAL_FN_TYPES:
        fn_type = fn_type if fn_type in GLOBAL_FN_TYPES else "global_shared_mlp"
        d["ci_config"] = {"mode": "global", "fn_type": fn_type, "hidden_dims": dims}
    else:
        d["ci_config"] = {"mode": "layerwise", "fn_type": fn_type, "hidden_dims": dims}


def _migrate_lr(d: dict[str, Any]) -> None:
    if "lr" not in d or isinstance(d.get("lr_schedule"), dict):
        d.pop("lr", None)
        d.pop("lr_warmup_pct", None)
        return
    kind = d.pop("lr_schedule", None) or "constant"
    if kind not in ("constant", "linear", "cosine"):
        raise ValueError(f"legacy lr_schedule {kind!r} cannot be migrated")
    d["lr_schedule"] = {
        "start_val": d.pop("lr"),
        "warmup_pct": d.pop("lr_warmup_pct", 0.0),
        # The old linear/cosine schedules decayed to zero.
        "final_val_frac": 1.0 if kind == "constant" else 0.0,
        "fn_type": kind,
    }


def _migrate_schedule_field(opt: dict[str, Any]) -> None:
    for old in ("step_size", "lr"):
        if old in opt and "lr_schedule" not in opt:
            opt["lr_schedule"] = {"start_val": opt.pop(old), "fn_type": "constant"}
        opt.pop(old, None)


def migrate_metric_config_dict(m: dict[str, Any]) -> dict[str, Any]:
    """ImportanceMinimality `pnorm_1`/`pnorm_2`/missing beta; PPGD scope names and lr fields."""
    m = dict(m)
    if m.get("classname") == "ImportanceMinimalityLoss":
        if "pnorm_1" in m:
            m["pnorm"] = m.pop("pnorm_1")
        m.pop("pnorm_2", None)
        m.setdefault("beta", 0.0)
    if m.get("classname") in ("PersistentPGDReconLoss", "PersistentPGDReconSubsetLoss"):
        scope = m.get("scope")
        if isinstance(scope, str):
            scope = {"type": scope}
        if isinstance(scope, dict):
            scope = dict(scope)
            scope["type"] = LEGACY_PPGD_SCOPES.get(scope["type"], scope["type"])
            if "n_masks" in scope:
                scope["n_sources"] = scope.pop("n_masks")
            m["scope"] = scope
        if isinstance(m.get("optimizer"), dict):
            m["optimizer"] = dict(m["optimizer"])
            _migrate_schedule_field(m["optimizer"])
    return m


def _check_classnames(configs: list[Any], field: str, allowed: frozenset[str]) -> None:
    for cfg in configs:
        name = cfg.get("classname") if isinstance(cfg, dict) else getattr(cfg, "classname", None)
        if name not in allowed:
            raise ValueError(f"{field}: unknown metric classname {name!r}; known: {sorted(allowed)}")


def _migrate_metric_list(d: dict[str, Any], field: str, allowed: frozenset[str]) -> None:
    items = d.get(field)
    if not items:
        return
    migrated = [
        migrate_metric_config_dict(m) if isinstance(m, dict) else m
        for m in items
        if not (isinstance(m, dict) and "extra_init_kwargs" in m)
    ]
    _check_classnames(migrated, field, allowed)
    d[field] = migrated


def migrate_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """Apply every legacy-key migration of spec §4.7; returns a new dict (input untouched)."""
    d = _rename_and_drop(dict(config))
    _migrate_module_info(d)
    _migrate_ci_config(d)
    _migrate_lr(d)
    _migrate_metric_list(d, "loss_metric_configs", LOSS_CLASSNAMES)
    _migrate_metric_list(d, "eval_metric_configs", METRIC_CLASSNAMES)
    if "batch_size" in d:
        d.setdefault("eval_batch_size", d["batch_size"])
    d.setdefault("train_log_freq", 50)
    if "eval_freq" in d:
        d.setdefault("slow_eval_freq", d["eval_freq"])
    cls_path = d.get("pretrained_model_class")
    if isinstance(cls_path, str) and cls_path.startswith("simple_stories_train.models."):
        d["pretrained_model_class"] = "spd.pretrain.models." + cls_path.removeprefix("simple_stories_train.models.")
    return d


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a config dict (legacy keys migrated first)."""
    return Config.model_validate(data)


def export_config(config: Config) -> dict[str, Any]:
    """The research code's `final_config.yaml` content (`model_dump(mode="json")`)."""
    return config.model_dump(mode="json")
