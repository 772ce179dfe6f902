"""GPU worker shell: ``celery -A spdlab.gpu_worker.app worker -Q gpu -c 1 --prefetch-multiplier 1``
(or ``python -m spdlab.gpu_worker``). Must not import torch at import time."""

from __future__ import annotations

from spdlab.common.celery_app import get_celery
from spdlab.common.worker import install_worker_monitor, make_run_task
from spdlab.gpu_worker.handlers import REGISTRY

app = get_celery()
run_job = make_run_task(app, REGISTRY)
install_worker_monitor(REGISTRY.queue)
