"""Progress and cancellation callbacks shared by every long-running core function."""

from collections.abc import Callable

ProgressFn = Callable[[int, int, str], None]
"""Called as `progress(current, total, stage)`."""

CancelFn = Callable[[], bool]
"""Returns True when the caller wants the computation to stop."""


class Cancelled(Exception):
    """Raised by `check_cancel` when the cancel callback says stop."""


def no_progress(current: int, total: int, stage: str) -> None:
    """Default progress callback: ignore."""


def never_cancel() -> bool:
    """Default cancel callback: never."""
    return False


def check_cancel(cancel: CancelFn | None) -> None:
    """Raise `Cancelled` if `cancel` is set and returns True."""
    if cancel is not None and cancel():
        raise Cancelled("cancelled by caller")
