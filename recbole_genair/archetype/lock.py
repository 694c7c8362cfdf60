"""One run per work folder: an exclusive lock file beside the folder (`recbole_genair.locking`).

Two runs on one folder would cut each other's rows when they reopen the vector store, so that an
item silently gets another item's vector.
"""
from pathlib import Path

from recbole_genair.archetype.settings import SettingsError
from recbole_genair.locking import LockHeld, ProcessLock, describe_holder


def lock_path(folder):
    """`<folder>.lock`, beside the folder, so that moving the folder aside keeps the lock in place."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".lock")


class _RunLock(ProcessLock):
    """A lock whose second holder gets a `SettingsError` that says who has it and what to do instead."""

    def held_message(self, holder):
        raise NotImplementedError

    def acquire(self):
        try:
            return super().acquire()
        except LockHeld as held:
            raise SettingsError(self.held_message(describe_holder(held.holder))) from None


class WorkLock(_RunLock):
    """The lock of one work folder."""

    def __init__(self, folder):
        super().__init__(lock_path(folder))
        self.folder = Path(folder)

    def held_message(self, holder):
        return (f"{self.folder} is in use by another run: {holder}. Two runs on one work folder would cut each other's "
                f"vectors. Wait for it to end (or stop it), set another work_dir, or split the items between processes "
                f"with --shard=i/n (one folder each) and join them with --merge=True.")


class OutputLock(_RunLock):
    """The lock of one `.itememb` being written: two runs with other work folders would replace each other's file."""

    def __init__(self, itememb):
        super().__init__(Path(str(itememb) + ".lock"))
        self.itememb = Path(itememb)

    def held_message(self, holder):
        return (f"{self.itememb} is being written by another run: {holder}. Its vectors would replace this run's (or "
                f"the other way round). Wait for it to end, or give this run another output_path.")


class HeldLocks:
    """The locks one run holds: each folder is locked once, and all are released when the run ends."""

    def __init__(self):
        self.locks = {}

    def hold(self, folder):
        key = lock_path(folder).resolve()
        if key not in self.locks:
            self.locks[key] = WorkLock(folder).acquire()

    def hold_output(self, itememb):
        """Lock the `.itememb` this run will write, for the whole run (taken before any work)."""
        lock = OutputLock(itememb)
        key = lock.path.resolve()
        if key not in self.locks:
            self.locks[key] = lock.acquire()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for lock in self.locks.values():
            lock.release()
        self.locks.clear()
