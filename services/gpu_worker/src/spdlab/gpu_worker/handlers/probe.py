"""``probe``: one component's CI and activation on custom text (one forward, no storage)."""

from __future__ import annotations

from spdlab.common.contracts.probes import ProbeParams, ProbeResult
from spdlab.common.runner import JobContext, JobFailedError
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.harvest_inputs import load_entry, make_adapter


@REGISTRY.register("probe")
def run_probe(ctx: JobContext) -> ProbeResult:
    import torch

    from spdlab.core.harvest.adapter import HFTokenEncoder
    from spdlab.core.harvest.spd_adapter import ACT_TYPE, CI_TYPE

    params = ctx.params
    assert isinstance(params, ProbeParams)
    entry = load_entry(ctx, params.decomposition_id)
    if entry.tokenizer is None:
        raise JobFailedError(f"decomposition {params.decomposition_id} has no tokenizer", "no_tokenizer")
    encoder = HFTokenEncoder(entry.tokenizer)
    ids = encoder.encode_batch([params.text])[0]
    max_len = getattr(getattr(entry.loaded.config, "task_config", None), "max_seq_len", None)
    if not ids:
        raise JobFailedError("text: no tokens", "empty_text")
    if max_len is not None and len(ids) > int(max_len):
        raise JobFailedError(f"text: {len(ids)} tokens, more than the model's context of {max_len}", "text_too_long")
    adapter = make_adapter(entry, len(ids), ctx.settings)
    layer = next((la for la in adapter.layers if params.layer in (la.canonical, la.name)), None)
    if layer is None:
        known = [la.canonical or la.name for la in adapter.layers]
        raise JobFailedError(f"layer: unknown layer {params.layer!r} (layers: {known})", "unknown_layer")
    if params.component_idx >= layer.n_components:
        raise JobFailedError(f"component_idx: {params.component_idx} is out of range for layer {params.layer!r} "
                             f"({layer.n_components} components)", "unknown_component")
    tokens = torch.tensor([ids], dtype=torch.int64, device=adapter.device)
    out = adapter.run_batch(tokens)
    acts = out.activations[layer.name]
    return ProbeResult(
        layer=layer.canonical or layer.name, component_idx=params.component_idx, token_ids=ids,
        tokens=[encoder.decode_token(t) for t in ids],
        ci=acts[CI_TYPE][0, :, params.component_idx].cpu().tolist(),
        activation=acts[ACT_TYPE][0, :, params.component_idx].cpu().tolist(),
    )
