"""The two errors a user sees, and the wrapper every entry point runs in: a RecipeError (bad input) or a
RunError (a fault during a run), and a full disk wherever it strikes, becomes one line on stderr and an exit
status, never a traceback."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any


class RecipeError(ValueError):
    """A user mistake in a recipe, a path or a value; its message says how to fix it."""


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)  # no space left, quota exceeded


class RunError(RuntimeError):
    """A fault during a run (non-finite loss, disk full, a stop signal): what happened, what was kept,
    what to do; `exit_code` is the process's exit status."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def run_cli(main: Callable[[], Any]) -> int:
    """Run an entry point; a RecipeError (bad input) becomes one line on stderr and exit status 2, a
    RunError (a fault) one line and its exit code, a full disk one line and exit status 1."""
    try:
        main()
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        where = f" writing '{err.filename}'" if err.filename else ""
        print(f"error: no space left on the device{where} ({err.strerror}): free space there, or write elsewhere, "
              f"then rerun the same command", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: stopped at once by Ctrl-C: what was not saved is lost; rerun the same command to continue "
              "from the last resume checkpoint", file=sys.stderr)
        return 130
    return 0
