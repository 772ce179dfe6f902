"""``test.sleep`` (platform tests and bench)."""

from __future__ import annotations

from spdlab.common.sleep_kind import run_sleep
from spdlab.gpu_worker.handlers import REGISTRY

REGISTRY.register("test.sleep")(run_sleep)
