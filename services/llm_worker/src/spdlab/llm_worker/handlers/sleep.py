"""``test.llm_sleep`` (platform tests): the test sleep kind on the llm queue."""

from __future__ import annotations

from spdlab.common.sleep_kind import run_sleep
from spdlab.llm_worker.handlers import REGISTRY

REGISTRY.register("test.llm_sleep")(run_sleep)
