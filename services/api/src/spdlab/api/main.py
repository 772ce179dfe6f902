"""The API gateway's app factory: ``uvicorn --factory spdlab.api.main:create_app``. No torch here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from spdlab.api.dashboard import mount_dashboard
from spdlab.api.errors import install_error_handlers
from spdlab.api.logging import RequestIdMiddleware
from spdlab.api.metrics import Metrics, MetricsMiddleware
from spdlab.api.notify import JobNotifier
from spdlab.api.routes import (
    components,
    dataset_attributions,
    datasets,
    decompose,
    decomposition_import,
    decompositions,
    graphs,
    harvests,
    health,
    interventions,
    jobs,
    probes,
    prompts,
    users,
)
from spdlab.common.db import upgrade_database
from spdlab.common.logs import configure_logging
from spdlab.common.settings import Settings, get_settings

API_VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    notifier = JobNotifier(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await run_in_threadpool(upgrade_database, settings.effective_database_url)
        await notifier.start()
        yield
        await notifier.stop()

    app = FastAPI(
        title="spdlab",
        version=API_VERSION,
        description="Stochastic Parameter Decomposition as a multi-user service.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.notifier = notifier
    app.state.metrics = Metrics(settings)
    install_error_handlers(app)
    for module in (health, jobs, users, decomposition_import, decompose, decompositions, prompts, graphs, interventions):
        app.include_router(module.router)
    app.include_router(graphs.prompt_router)
    app.include_router(interventions.graph_router)
    for module in (datasets, harvests, components, probes, dataset_attributions):
        app.include_router(module.router)
    mount_dashboard(app)
    # Outermost last: request ids wrap everything, including the metrics middleware.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
