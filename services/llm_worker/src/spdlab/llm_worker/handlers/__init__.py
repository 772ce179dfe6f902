"""Handlers of the llm queue: ``REGISTRY`` maps job kind -> handler (see the gpu worker's twin)."""

from __future__ import annotations

from spdlab.common.registry import HandlerRegistry

REGISTRY = HandlerRegistry("llm")

from spdlab.llm_worker.handlers import sleep  # noqa: E402,F401  (registers its kinds)
