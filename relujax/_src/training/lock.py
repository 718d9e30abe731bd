"""One run per workdir: an advisory lock that dies with the process holding it.

`fcntl.flock` on `<workdir>/.lock`: the kernel releases it when the holder exits, however it
exits (kill -9 included), so a stale lock file never blocks `--resume`; the file only records
who holds it (pid, host, start time) for the message a second run prints.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time
from types import TracebackType

from relujax._src.training.config import ConfigError

LOCK_NAME = ".lock"


class WorkdirBusy(ConfigError):  # noqa: N818 (reads as a state: the workdir is busy)
    """Another process is running in this workdir."""


class WorkdirLock:
    """Holds `<workdir>/.lock` while open; raises WorkdirBusy if another process holds it.

    Example:
        >>> import tempfile
        >>> from relujax._src.training.lock import WorkdirLock
        >>> with WorkdirLock(tempfile.mkdtemp()):
        ...     pass
    """

    def __init__(self, workdir: str | pathlib.Path) -> None:
        self.path = pathlib.Path(workdir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one run per workdir is then on the user
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise WorkdirBusy(
                f"--workdir {self.path.parent} is in use by {_holder(self.path)}; wait for it to "
                "finish (or stop it), or choose another --workdir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _holder(path: pathlib.Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"process {info['pid']} on {info['host']} (running since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
