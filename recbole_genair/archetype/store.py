"""Crash-safe work files: an append-only text log, a raw vector store, and atomic final writes.

A batch is appended and fsync'ed before the next one starts, so a killed run loses at most the batch
in flight; reopening drops a truncated last line or row and goes on from there.
"""
import contextlib
import json
import os
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """Write to a temporary file beside `path`, then rename over it: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    kwargs = {} if "b" in mode else {"encoding": encoding}
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _truncate_to_last_newline(path):
    """Drop a partial last line (a run killed mid-write); return the good byte length."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return size
        data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    os.truncate(path, good)
    return good


class TextLog:
    """`texts.jsonl`: one JSON record per item whose archetype has been written (`load=False`: start empty)."""

    def __init__(self, path, load=True):
        self.path = Path(path)
        self.records = {}
        if load and self.path.exists():
            _truncate_to_last_newline(self.path)
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    record = json.loads(line)
                    self.records.setdefault(record["id"], record)

    def append(self, records):
        with open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records.setdefault(record["id"], record)
            f.flush()
            os.fsync(f.fileno())


class VectorStore:
    """`vectors.f32` (rows of `2 x hidden` float32: prefill, decoding) with `vectors.ids` (one id per line).

    Rows are written before their ids, so an id line always has its row; on reopening, both files are
    cut to the number of complete (id, row) pairs.
    """

    def __init__(self, folder, hidden_size):
        folder = Path(folder)
        self.rows_path, self.ids_path = folder / "vectors.f32", folder / "vectors.ids"
        self.hidden_size = hidden_size
        self.row_bytes = 2 * hidden_size * 4
        self.ids = []
        if self.ids_path.exists():
            _truncate_to_last_newline(self.ids_path)
            # only "\n" ends an id: str.splitlines() would also split at U+0085, U+2028, "\r", ... inside one
            self.ids = self.ids_path.read_bytes().decode("utf-8").split("\n")[:-1]
        n_rows = self.rows_path.stat().st_size // self.row_bytes if self.rows_path.exists() else 0
        keep = min(len(self.ids), n_rows)
        if keep < len(self.ids):
            self.ids = self.ids[:keep]
            with atomic_write(self.ids_path) as f:
                f.write("".join(i + "\n" for i in self.ids))
        if self.rows_path.exists():
            os.truncate(self.rows_path, keep * self.row_bytes)
        self.index = {item: row for row, item in enumerate(self.ids)}

    def append(self, ids, pooled):
        pooled = np.ascontiguousarray(pooled, dtype=np.float32)
        assert pooled.shape == (len(ids), 2, self.hidden_size)
        with open(self.rows_path, "ab") as f:
            f.write(pooled.tobytes())
            f.flush()
            os.fsync(f.fileno())
        with open(self.ids_path, "a", encoding="utf-8") as f:
            f.write("".join(i + "\n" for i in ids))
            f.flush()
            os.fsync(f.fileno())
        for item in ids:
            self.index.setdefault(item, len(self.ids))
            self.ids.append(item)

    def matrix(self):
        """All rows as a read-only memory map (`n x 2 x hidden`), never loaded whole."""
        if not self.ids:
            return np.empty((0, 2, self.hidden_size), dtype=np.float32)
        return np.memmap(self.rows_path, dtype=np.float32, mode="r", shape=(len(self.ids), 2, self.hidden_size))
