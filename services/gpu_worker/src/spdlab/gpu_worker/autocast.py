"""Optional bf16 autocast for the core's passes on CUDA (`SPDLAB_AUTOCAST_BF16`).

Float32 is the numeric reference and the default. With the setting on and the job's device a CUDA
GPU that supports bf16, the graph and intervention computations run inside
`torch.autocast("cuda", dtype=torch.bfloat16)`, and the harvest / probe adapter runs its forward
pass under it (the adapter keeps its statistics in float32 and its exact counts out of autocast).
On any other device the setting is ignored, logged once per process and device type.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from typing import TYPE_CHECKING, Any

from spdlab.common.settings import Settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@cache
def _note_ignored(reason: str) -> None:
    # Once per reason: a worker serves many jobs, and the reason does not change between them.
    log.warning("SPDLAB_AUTOCAST_BF16 is set but ignored: %s; computing in float32", reason)


def autocast_dtype(settings: Settings, device: torch.device) -> torch.dtype | None:
    """`torch.bfloat16` when the setting is on and `device` is a bf16-capable CUDA GPU, else None."""
    import torch

    if not settings.autocast_bf16:
        return None
    if device.type != "cuda":
        _note_ignored(f"the device is {device.type}, not cuda")
        return None
    if not torch.cuda.is_bf16_supported():
        _note_ignored("this CUDA device does not support bfloat16")
        return None
    return torch.bfloat16


def core_autocast(settings: Settings, device: torch.device) -> AbstractContextManager[Any]:
    """The context to run a core computation on `device` in: bf16 autocast, or nothing (float32)."""
    import torch

    dtype = autocast_dtype(settings, device)
    if dtype is None:
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype)
