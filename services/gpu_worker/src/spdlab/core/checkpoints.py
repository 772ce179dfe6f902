"""spdlab's own decomposition format, and export back to a research-code run directory.

Our format is a directory with `weights.safetensors` (the component model's state dict),
`spdlab.json` (versioned manifest: SPD config, target model type + config, tokenizer file name,
source) and `tokenizer.json` when there is one. Tensors round-trip bit for bit.
"""

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import Tensor

from spdlab.common.spd_config import export_config, parse_config
from spdlab.core.component_model import build_component_model
from spdlab.core.module_patterns import freeze_
from spdlab.core.research_import import (
    CONFIG_FILENAME,
    LoadedDecomposition,
    RunImportError,
    SourceInfo,
    load_state_dict_strict,
)
from spdlab.core.targets import TMSModel, build_target

FORMAT_NAME = "spdlab-decomposition"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "spdlab.json"
TOKENIZER_FILE = "tokenizer.json"


def _untied_cpu_state_dict(loaded: LoadedDecomposition) -> dict[str, Tensor]:
    """safetensors rejects shared storage (tied wte/lm_head), so every entry gets its own copy."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in loaded.component_model.state_dict().items()}


def _tokenizer_text(loaded: LoadedDecomposition) -> str | None:
    if loaded.tokenizer_json is not None:
        return loaded.tokenizer_json
    return None if loaded.tokenizer is None else loaded.tokenizer.to_str()


def save_decomposition(loaded: LoadedDecomposition, directory: str | Path) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_untied_cpu_state_dict(loaded), str(out / WEIGHTS_FILE))
    tok = _tokenizer_text(loaded)
    if tok is not None:
        (out / TOKENIZER_FILE).write_text(tok)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "spd_config": export_config(loaded.config),
        "target": {"model_type": loaded.target_model_type, "config": loaded.target_config.model_dump(mode="json")},
        "tokenizer_file": TOKENIZER_FILE if tok is not None else None,
        "source": asdict(loaded.source),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise RunImportError(f"missing manifest {path}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_NAME:
        raise RunImportError(f"{path} is not an {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RunImportError(f"unsupported format_version {manifest.get('format_version')!r} in {path}")
    return manifest


def load_decomposition(directory: str | Path, device: torch.device | str = "cpu") -> LoadedDecomposition:
    root = Path(directory)
    manifest = _read_manifest(root)
    try:
        config = parse_config(manifest["spd_config"])
        target = build_target(manifest["target"]["model_type"], manifest["target"]["config"])
    except (ValidationError, ValueError, KeyError) as e:
        raise RunImportError(f"invalid manifest {root / MANIFEST_FILE}: {e}") from e
    freeze_(target)
    model = build_component_model(target, config)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise RunImportError(f"missing weights file {weights}")
    load_state_dict_strict(model, load_file(str(weights)))
    tok_name = manifest.get("tokenizer_file")
    tok_text = (root / tok_name).read_text() if tok_name else None
    return LoadedDecomposition(
        config=config,
        component_model=model.to(device),
        target_model_type=manifest["target"]["model_type"],
        target_config=target.config,  # type: ignore[arg-type]
        tokenizer=None if tok_text is None else Tokenizer.from_str(tok_text),
        source=SourceInfo(kind="spdlab_checkpoint", path=str(root), extra={"origin": manifest.get("source")}),
        tokenizer_json=tok_text,
    )


# --- export to the research code's run-directory layout ------------------------------------------


def _target_state_dict(loaded: LoadedDecomposition) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in loaded.component_model.target_model.state_dict().items()}


def _target_checkpoint_name(loaded: LoadedDecomposition, step: int) -> str:
    """Keep the original pretrain checkpoint's file name when it has the research layout."""
    name = Path(loaded.config.pretrained_model_name or "").name
    return name if re.fullmatch(r"model_step_\d+\.pt", name) else f"model_step_{step}.pt"


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, sort_keys=False))


def _export_target(loaded: LoadedDecomposition, run_dir: Path, step: int) -> dict[str, Any]:
    """Write the target files and return the config fields that point at them."""
    target_dir = run_dir / "target"
    model_type = loaded.target_model_type
    cfg = loaded.target_config.model_dump(mode="json")
    if model_type in ("LlamaSimpleMLP", "GPT2Simple"):
        ckpt = target_dir / "checkpoints" / _target_checkpoint_name(loaded, step)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_target_state_dict(loaded), ckpt)
        _write_yaml(target_dir / "model_config.yaml", cfg)
        _write_yaml(target_dir / "final_config.yaml", {"model": cfg, "train_dataset_config": {"hf_tokenizer_path": None}})
        tok = _tokenizer_text(loaded)
        if tok is not None:
            (target_dir / TOKENIZER_FILE).write_text(tok)
        # Keep the "./" prefix: a bare 3-part relative path reads as a W&B run path to the research code.
        return {"pretrained_model_name": f"./target/checkpoints/{ckpt.name}", "pretrained_model_path": None}
    stems = {TMSModel.__name__: ("tms", "tms_model_config"), "ResidMLP": ("resid_mlp", "resid_mlp_model_config")}
    if model_type not in stems:
        raise ValueError(f"cannot export a {model_type!r} target to a research run directory")
    stem, key = stems[model_type]
    target_dir.mkdir(parents=True, exist_ok=True)
    torch.save(_target_state_dict(loaded), target_dir / f"{stem}.pth")
    _write_yaml(target_dir / f"{stem}_train_config.yaml", {key: cfg})
    return {"pretrained_model_path": f"target/{stem}.pth", "pretrained_model_name": None}


def export_research_run(loaded: LoadedDecomposition, directory: str | Path, step: int | None = None) -> Path:
    """Write `final_config.yaml`, `model_<step>.pth` and `target/` as the research code lays them out."""
    run_dir = Path(directory)
    run_dir.mkdir(parents=True, exist_ok=True)
    step = step if step is not None else (loaded.source.step if loaded.source.step is not None else loaded.config.steps)
    config = export_config(loaded.config)
    config.update(_export_target(loaded, run_dir, step))
    _write_yaml(run_dir / CONFIG_FILENAME, config)
    state = {k: v.detach().cpu() for k, v in loaded.component_model.state_dict().items()}
    torch.save(state, run_dir / f"model_{step}.pth")
    return run_dir
