"""The test kinds' handler body (``test.sleep`` on gpu, ``test.llm_sleep`` on llm): sleeps in steps
with progress, wakes at once on cancel, and can fail on request."""

from __future__ import annotations

from spdlab.common.contracts.sleep import SleepParams, SleepResult
from spdlab.common.runner import JobContext, JobFailedError


def run_sleep(ctx: JobContext) -> SleepResult:
    params = ctx.params
    assert isinstance(params, SleepParams)
    for step in range(params.steps):
        if params.fail_at is not None and step == params.fail_at:
            raise JobFailedError(f"failing at step {step} as requested", "requested_failure")
        ctx.sleep(params.step_s)
        ctx.progress(step + 1, params.steps, "sleep")
    return SleepResult(steps_done=params.steps, slept_s=params.steps * params.step_s, worker=ctx.worker)
