"""Import a run directory written by the research code (spec §4.5–4.7).

Finds the checkpoint (`model_<step>.pth`, highest step), `final_config.yaml` and the target files
(resolved against the run directory, not the process's cwd), maps legacy state-dict keys, checks
the CI mode and loads strictly. Every failure is a `RunImportError` naming the missing or
mismatched piece.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ValidationError
from tokenizers import Tokenizer
from torch import Tensor, nn

from spdlab.common.spd_config import Config, parse_config
from spdlab.core.component_model import ComponentModel, build_component_model
from spdlab.core.module_patterns import freeze_
from spdlab.core.targets import TMSModel, get_target_spec

CONFIG_FILENAME = "final_config.yaml"
_CHECKPOINT_RE = re.compile(r"^model_(\d+)\.pth$")
_LM_TARGETS = {"LlamaSimpleMLP", "GPT2Simple"}


class RunImportError(Exception):
    """A run directory is partial or inconsistent; the message names the piece."""


@dataclass
class SourceInfo:
    kind: str  # "research_run" | "spdlab_checkpoint"
    path: str
    checkpoint: str | None = None
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedDecomposition:
    config: Config
    component_model: ComponentModel
    target_model_type: str
    target_config: BaseModel
    tokenizer: Tokenizer | None
    source: SourceInfo
    tokenizer_json: str | None = None  # raw file text, kept so exports are byte-identical


# --- pure helpers ------------------------------------------------------------------------------


def find_latest_checkpoint(run_dir: Path) -> tuple[Path, int]:
    """The `model_<step>.pth` with the largest step."""
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CHECKPOINT_RE.match(p.name))]
    if not found:
        raise RunImportError(f"no checkpoint file model_<step>.pth in {run_dir}")
    step, path = max(found)
    return path, step


def map_legacy_state_dict_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Old key layouts → current (`_gates.`, `patched_model.`, `.original.weight`,
    `target_model.<p>.components.{U,V}`, top-level `_ci_fns.`)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key.replace("_gates.", "_ci_fns.")
        if new.startswith("patched_model."):
            new = "target_model." + new.removeprefix("patched_model.")
        if new.endswith(".original.weight"):
            new = new.removesuffix(".original.weight") + ".weight"
        m = re.match(r"^target_model\.(.+)\.components\.([UV])$", new)
        if m:
            new = f"_components.{m.group(1).replace('.', '-')}.{m.group(2)}"
        if new.startswith("_ci_fns."):
            new = "ci_fn." + new
        out[new] = value
    return out


def check_ci_mode(config: Config, state_dict: dict[str, Tensor]) -> None:
    layerwise = any(k.startswith("ci_fn._ci_fns") for k in state_dict)
    global_ = any(k.startswith("ci_fn._global_ci_fn") for k in state_dict)
    mode = config.ci_config.mode
    if mode == "layerwise" and not layerwise:
        found = "global CI keys (ci_fn._global_ci_fn.*)" if global_ else "no CI keys"
        raise RunImportError(f"config ci_config.mode is 'layerwise' but the checkpoint has {found}")
    if mode == "global" and not global_:
        found = "layerwise CI keys (ci_fn._ci_fns.*)" if layerwise else "no CI keys"
        raise RunImportError(f"config ci_config.mode is 'global' but the checkpoint has {found}")


def _preview(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Strict load with an error that lists missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing state-dict keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected state-dict keys: {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_preview(shapes)}")
    if problems:
        raise RunImportError("; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise RunImportError(f"missing {what}: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise RunImportError(f"{what} {path} is not a YAML mapping")
    return data


def _torch_load(path: Path, what: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise RunImportError(f"missing {what}: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt/truncated files
        raise RunImportError(f"cannot read {what} {path}: {e}") from e


# --- target loading --------------------------------------------------------------------------------


@dataclass
class _Target:
    model: nn.Module
    model_type: str
    config: BaseModel
    tokenizer_json: str | None
    target_dir: Path | None


def _build(model_type: str, cfg: dict[str, Any]) -> tuple[nn.Module, BaseModel]:
    try:
        spec = get_target_spec(model_type)
    except KeyError as e:
        raise RunImportError(str(e.args[0])) from e
    try:
        config = spec.config_cls.model_validate(cfg)
    except ValidationError as e:
        raise RunImportError(f"invalid {model_type} target config: {e}") from e
    return spec.model_cls(config), config


def _load_target_weights(model: nn.Module, sd: dict[str, Tensor], what: str) -> None:
    try:
        load_state_dict_strict(model, sd)
    except RunImportError as e:
        raise RunImportError(f"{what}: {e}") from e


def _load_pretrain_target(run_dir: Path, name: str, class_name: str) -> _Target:
    """`spd.pretrain` layout: the checkpoint file, configs two directories above it."""
    ckpt = (run_dir / name).resolve()
    if not ckpt.is_file():
        raise RunImportError(f"missing target checkpoint {ckpt} (pretrained_model_name={name!r})")
    target_dir = ckpt.parent.parent
    model_cfg = _read_yaml(target_dir / "model_config.yaml", "target model config")
    model_type = model_cfg.get("model_type", class_name)
    if model_type != class_name:
        raise RunImportError(
            f"target model_config.yaml has model_type {model_type!r} but the SPD config names {class_name!r}"
        )
    model, config = _build(model_type, model_cfg)
    _load_target_weights(model, _torch_load(ckpt, "target checkpoint"), f"target checkpoint {ckpt}")
    tok_path = target_dir / "tokenizer.json"
    tok = tok_path.read_text() if tok_path.is_file() else None
    return _Target(model, model_type, config, tok, target_dir)


def _load_file_target(run_dir: Path, model_path: str, class_name: str) -> _Target:
    """TMS / ResidMLP: `<name>.pth` with `<name>_train_config.yaml` next to it."""
    pth = (run_dir / model_path).resolve()
    if not pth.is_file():
        raise RunImportError(f"missing target weights {pth} (pretrained_model_path={model_path!r})")
    stem = pth.stem
    train_cfg = _read_yaml(pth.parent / f"{stem}_train_config.yaml", "target train config")
    nested_key = {"TMSModel": "tms_model_config", "ResidMLP": "resid_mlp_model_config"}.get(class_name)
    if nested_key is None:
        raise RunImportError(f"unsupported file-based target class {class_name!r}")
    # The research code's run-dir copy of the TMS file is the flat model config; accept both.
    model_cfg = train_cfg.get(nested_key, train_cfg)
    if class_name == "ResidMLP":
        model_cfg = {k: v for k, v in model_cfg.items() if k != "device"}
    model, config = _build(class_name, model_cfg)
    _load_target_weights(model, _torch_load(pth, "target weights"), f"target weights {pth}")
    if isinstance(model, TMSModel):
        model.tie_weights_()
    return _Target(model, class_name, config, None, pth.parent)


def _load_target(run_dir: Path, config: Config) -> _Target:
    class_name = config.pretrained_model_class.rsplit(".", 1)[-1]
    if config.pretrained_model_name is not None and class_name in _LM_TARGETS:
        return _load_pretrain_target(run_dir, config.pretrained_model_name, class_name)
    if config.pretrained_model_path is not None:
        return _load_file_target(run_dir, config.pretrained_model_path, class_name)
    raise RunImportError(
        f"cannot locate the target {config.pretrained_model_class!r} offline: "
        f"pretrained_model_name={config.pretrained_model_name!r}, pretrained_model_path=None"
    )


# --- entry point -------------------------------------------------------------------------------------


def _resolve_paths(path: Path) -> tuple[Path, Path, int]:
    if path.is_dir():
        ckpt, step = find_latest_checkpoint(path)
        return path, ckpt, step
    if path.is_file():
        m = _CHECKPOINT_RE.match(path.name)
        return path.parent, path, int(m.group(1)) if m else -1
    raise RunImportError(f"run path does not exist: {path}")


def load_run_config(run_dir: Path) -> Config:
    raw = _read_yaml(run_dir / CONFIG_FILENAME, "SPD config")
    try:
        return parse_config(raw)
    except (ValidationError, ValueError) as e:
        raise RunImportError(f"invalid SPD config {run_dir / CONFIG_FILENAME}: {e}") from e


def import_research_run(path: str | Path, device: torch.device | str = "cpu") -> LoadedDecomposition:
    """Load a research-code run directory (or one of its `model_<step>.pth` files)."""
    run_dir, ckpt, step = _resolve_paths(Path(path).resolve())
    config = load_run_config(run_dir)
    target = _load_target(run_dir, config)
    freeze_(target.model)
    try:
        model = build_component_model(target.model, config)
    except ValueError as e:
        raise RunImportError(f"config does not fit the target: {e}") from e
    state_dict = map_legacy_state_dict_keys(_torch_load(ckpt, "SPD checkpoint"))
    check_ci_mode(config, state_dict)
    load_state_dict_strict(model, state_dict)
    tokenizer = Tokenizer.from_str(target.tokenizer_json) if target.tokenizer_json is not None else None
    source = SourceInfo(
        kind="research_run",
        path=str(run_dir),
        checkpoint=ckpt.name,
        step=step,
        extra={"target_dir": None if target.target_dir is None else str(target.target_dir)},
    )
    return LoadedDecomposition(
        config=config,
        component_model=model.to(device),
        target_model_type=target.model_type,
        target_config=target.config,
        tokenizer=tokenizer,
        source=source,
        tokenizer_json=target.tokenizer_json,
    )
