"""Handlers of the gpu queue: ``REGISTRY`` maps job kind -> handler.

A new kind's module registers itself with ``@REGISTRY.register("<kind>")`` and is imported below.
Handlers import the torch core lazily (inside the function), so the worker shell starts without it.
"""

from __future__ import annotations

from spdlab.common.registry import HandlerRegistry

REGISTRY = HandlerRegistry("gpu")

from spdlab.gpu_worker.handlers import (  # noqa: E402,F401  # noqa: E402,F401  (harvest family: datasets, shards, probes)
    dataset_attributions,
    datasets,
    decompose,
    decompositions,
    graphs,
    harvest,
    interventions,
    probe,
    sleep,  # noqa: E402,F401  (registers its kinds)
)
