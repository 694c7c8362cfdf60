"""Exclusive locks between processes on one machine (or one shared POSIX file system).

`fcntl.flock` on a small file that records who holds it: the kernel releases the lock when the holder
exits or is killed, so a crashed run never leaves a stale lock behind.
"""
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class LockHeld(RuntimeError):
    """Another process holds the lock; `holder` is what it wrote (pid, host, since, command)."""

    def __init__(self, path, holder):
        self.path, self.holder = Path(path), holder
        super().__init__(f"{path} is locked by {describe_holder(holder)}")


def describe_holder(holder):
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"process {holder.get('pid')} on {holder.get('host')} (since {since}: {holder.get('command', '?')})"


class ProcessLock:
    """A non-blocking exclusive lock on `path`; `acquire()` raises `LockHeld` naming the holder."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = None

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(self.path, holder) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd):
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (OSError, ValueError):
        return None
