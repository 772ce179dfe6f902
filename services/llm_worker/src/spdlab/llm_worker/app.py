"""LLM worker shell: ``celery -A spdlab.llm_worker.app worker -Q llm -P threads -c 8``
(or ``python -m spdlab.llm_worker``)."""

from __future__ import annotations

from spdlab.common.celery_app import get_celery
from spdlab.common.worker import install_worker_monitor, make_run_task
from spdlab.llm_worker.handlers import REGISTRY

app = get_celery()
run_job = make_run_task(app, REGISTRY)
install_worker_monitor(REGISTRY.queue)
