"""``python -m spdlab.llm_worker [celery worker options]``: a thread pool for concurrent calls."""

from __future__ import annotations

import sys

from spdlab.common.logs import configure_logging
from spdlab.common.worker import worker_argv


def main() -> None:
    configure_logging()
    from spdlab.llm_worker.app import app

    app.worker_main(worker_argv("llm", sys.argv[1:]))


if __name__ == "__main__":
    main()
