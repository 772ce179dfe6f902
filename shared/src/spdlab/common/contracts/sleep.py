"""Test-only job kinds that sleep in steps (used by the platform's integration tests and bench)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=5, ge=0, le=10_000, description="number of sleep steps")
    step_s: float = Field(default=0.1, ge=0, le=60, description="seconds per step")
    fail_at: int | None = Field(default=None, ge=0, description="raise a user-facing error at this step")
    nonce: str | None = Field(default=None, max_length=100, description="vary to bypass the result cache")


class SleepJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: ClassVar[str] = "gpu"

    kind: Literal["test.sleep"]
    params: SleepParams = SleepParams()


class LlmSleepJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: ClassVar[str] = "llm"

    kind: Literal["test.llm_sleep"]
    params: SleepParams = SleepParams()


class SleepResult(BaseModel):
    steps_done: int
    slept_s: float
    worker: str
