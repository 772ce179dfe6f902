"""``python -m spdlab.gpu_worker [celery worker options]``: one job at a time, prefetch 1."""

from __future__ import annotations

import sys

from spdlab.common.logs import configure_logging
from spdlab.common.worker import worker_argv


def main() -> None:
    configure_logging()
    from spdlab.gpu_worker.app import app

    app.worker_main(worker_argv("gpu", sys.argv[1:]))


if __name__ == "__main__":
    main()
