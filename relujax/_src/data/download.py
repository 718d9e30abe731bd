"""Atomic downloads with a progress bar and size/md5 verification (urllib only)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any

from relujax._src.data.dataset import DataError

__all__ = ["Resource", "default_data_dir", "download", "file_md5"]

_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Resource:
    """A file that can be downloaded: its name in the data folder, URL, size and md5."""

    filename: str
    url: str
    size: int
    md5: str


def default_data_dir(data_dir: str | os.PathLike[str] | None = None) -> str:
    """The data folder: ``data_dir``, else ``$RELUJAX_DATA``, else ``~/.cache/relujax``.

    Example:
      >>> default_data_dir("/tmp/cifar")
      '/tmp/cifar'
    """
    if data_dir is None:
        data_dir = os.environ.get("RELUJAX_DATA") or os.path.join("~", ".cache", "relujax")
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def file_md5(path: str | os.PathLike[str]) -> str:
    """The md5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, every 10% otherwise)."""

    def __init__(self, name: str, total: int, stream: IO[str] | None) -> None:
        self.name, self.total, self.stream = name, total, stream
        self.start = time.monotonic()
        self.last_decile = -1
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def update(self, done: int, final: bool = False) -> None:
        if self.stream is None:
            return
        frac = done / self.total if self.total > 0 else 0.0
        decile = int(frac * 10)
        if not (self.tty or final or decile > self.last_decile):
            return
        self.last_decile = decile
        rate = done / max(time.monotonic() - self.start, 1e-9) / 1e6
        width = 30
        bar = "#" * int(width * min(frac, 1.0))
        line = (
            f"Downloading {self.name}: [{bar:<{width}}] {100 * frac:5.1f}% "
            f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        if final and self.tty:
            self.stream.write("\n")
        self.stream.flush()


def download(
    resource: Resource,
    data_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    opener: Callable[[str], Any] | None = None,
    hint: str | None = None,
) -> str:
    """Downloads ``resource`` into ``data_dir`` atomically and returns the file's path.

    The bytes go to a hidden temporary file in ``data_dir``; only when the size and the md5
    match is it renamed to ``resource.filename`` (an atomic `os.replace`). A failed, wrong or
    interrupted download (including Ctrl-C) removes the temporary file and leaves the folder as
    it was. ``opener(url)`` returns a readable response (default `urllib.request.urlopen`);
    ``hint`` replaces the default "put FILE in DIR" fix in the offline message.

    Raises:
      DataError: the network is unreachable (one sentence saying where to put the file), or
        the download has the wrong size or md5.

    Example:
      >>> import hashlib, os, pathlib, tempfile
      >>> src = pathlib.Path(tempfile.mkdtemp(), "a.bin"); _ = src.write_bytes(b"abc")
      >>> r = Resource("a.bin", src.as_uri(), 3, hashlib.md5(b"abc").hexdigest())
      >>> os.path.basename(download(r, tempfile.mkdtemp(), progress=False))
      'a.bin'
    """
    data_dir = os.fspath(data_dir)
    target = os.path.join(data_dir, resource.filename)
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {data_dir} ({e})") from e
    opener = opener or (lambda url: urllib.request.urlopen(url, timeout=60))
    bar = _Progress(resource.filename, resource.size, sys.stderr if progress else None)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{resource.filename}.", suffix=".part", dir=data_dir)
    except OSError as e:
        raise DataError(f"cannot write to the data folder {data_dir} ({e})") from e
    try:
        done = 0
        with os.fdopen(fd, "wb") as out:
            try:
                response = opener(resource.url)
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                fix = hint or (
                    f"put {resource.filename} (from that URL, md5 {resource.md5}) in {data_dir}"
                )
                raise DataError(
                    f"could not download {resource.url} ({reason}): to work offline, {fix}, "
                    f"or point --data-dir / $RELUJAX_DATA at a folder that has it"
                ) from e
            try:
                with response:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if done > resource.size:
                            break
                        bar.update(done)
            except OSError as e:  # URLError, timeouts and resets are all OSErrors
                raise DataError(
                    f"download of {resource.url} failed after {done} bytes ({e}); "
                    f"nothing was written to {data_dir} (try again)"
                ) from e
            out.flush()
            os.fsync(out.fileno())
        bar.update(done, final=True)
        if done != resource.size:
            raise DataError(
                f"download of {resource.url} is {'larger' if done > resource.size else 'smaller'}"
                f" than expected: got {done}{'+' if done > resource.size else ''} bytes, "
                f"expected {resource.size}; nothing was written to {data_dir} (try again)"
            )
        if digest.hexdigest() != resource.md5:
            raise DataError(
                f"download of {resource.url} has md5 {digest.hexdigest()}, expected "
                f"{resource.md5} (corrupted in transit?); nothing was written to {data_dir}"
            )
        os.replace(tmp, target)
    except BaseException:
        # Ctrl-C included: never leave a half-written file behind.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return target
