"""User-facing errors: one line naming the problem and the fix."""

from __future__ import annotations

USER_ERROR_EXIT_CODE = 2
FAILED_CHECK_EXIT_CODE = 1


class DhaError(Exception):
    """A problem with the user's input (recipe, dataset, model file, flag).

    The CLI prints `str(error)` as one line and exits with code 2, no traceback.
    """

    exit_code = USER_ERROR_EXIT_CODE

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))


class CheckFailed(DhaError):
    """A quality gate failed (e.g. export parity): exit 1, nothing written."""

    exit_code = FAILED_CHECK_EXIT_CODE


class Stopped(DhaError):
    """The run was stopped from outside (a signal); its checkpoint is kept: exit 128 + the signal's number."""

    def __init__(self, signal_number: int, problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix)
        self.exit_code = 128 + signal_number
