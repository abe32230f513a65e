"""Output folders: held by one process at a time, and described in errors by what they hold.

A folder `runs/demo` is locked through `runs/.demo.lock` (an OS file lock, released when its process
ends, however it ends) while `runs/.demo.holder` says who holds it (pid, host, start, command), so a
second run refuses in one line that names the first, and a lock left by a killed process is taken over.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from common.errors import RecipeError

NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)  # filesystems without file locks


def contents(folder: Path, shown: int = 3) -> str:
    """A few of the names a folder holds, for error messages ("a.json, b, c and 4 more")."""
    names = sorted(p.name for p in folder.iterdir())
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _holder_text(record: dict) -> str:
    return (f"pid {record.get('pid')} on {record.get('host')} since {record.get('started')} "
            f"(`{record.get('command')}`)")


def _read_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _command() -> str:
    """This process's command line, as typed (`python -m pipeline.pretrain ...`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name.removesuffix('.__main__')}" if spec else f"python {sys.argv[0]}"
    return " ".join([program, *sys.argv[1:]])


@contextmanager
def exclusive(folder: str | Path, what: str) -> Iterator[None]:
    """Hold `folder` (a `what`: run, corpus, study) for the duration of the block; refuse with a RecipeError
    naming the holder if another process holds it. Where the filesystem has no locks, go on with a warning."""
    folder = Path(folder)
    lock_path = folder.parent / f".{folder.name}.lock"
    holder = folder.parent / f".{folder.name}.holder"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path), timeout=0)
        lock.acquire()
    except Timeout:
        record = _read_holder(holder)
        holder_text = _holder_text(record) if record else "another process"
        raise RecipeError(f"{what} folder '{folder}' is in use by {holder_text}: wait for it to finish, stop it, or "
                          f"choose another folder") from None
    except OSError as err:
        if err.errno not in NO_LOCKS:
            raise RecipeError(f"{what} folder '{folder}' cannot be written ({err.strerror or err}): choose a folder "
                              f"you can write to, with a shorter path") from err
        print(f"warning: this filesystem cannot lock '{lock_path}' ({err.strerror or err}); make sure no other "
              f"process writes to '{folder}'", file=sys.stderr)
        yield
        return
    try:
        previous = _read_holder(holder)
        if previous:
            print(f"warning: taking over {what} folder '{folder}' from {_holder_text(previous)}, which stopped "
                  f"without releasing it", file=sys.stderr)
        holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command()}))
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()
