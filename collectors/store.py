"""CSV files that survive a crash: rows appended one at a time, a torn last line repaired.

Every row is written with one ``write`` on an ``O_APPEND`` descriptor and ``fsync``-ed, so a
killed run (kill -9) loses at most the row being written; on reopening, a last line without
its newline (or with the wrong number of fields) is cut off and that configuration is measured
again. Rows are identified by a key (``key_columns``) so a resumed run skips what is done.

>>> store = CsvStore("datasets/cpu-1t-tensorflow/Conv2D.csv", columns, ("kernel_key", "load_target"))
>>> store.done()        # set of keys already measured            # doctest: +SKIP
>>> store.append(row)   # durable when it returns                # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from dnnsplit.predictor.records import StoreError, read_rows

__all__ = ["CsvStore", "StoreError", "read_rows"]


class CsvStore:
    def __init__(self, path: str | Path, columns: Sequence[str], key_columns: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.key_columns = list(key_columns)
        self._keys: set[tuple[str, ...]] = set()
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write_raw(_line(self.columns))
            return
        self._repair_tail()
        for row in read_rows(self.path, self.columns):
            self._keys.add(self.key_of(row))

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            last_start = data.rstrip(b"\n").rfind(b"\n") + 1
            last = data[last_start:]
            if last_start and not _well_formed(last, len(self.columns)):
                self._truncate(last_start)
            return
        cut = data.rfind(b"\n") + 1  # drop the torn line
        if cut == 0:
            raise StoreError(f"{self.path} has no complete header line: delete it and rerun")
        self._truncate(cut)

    def _truncate(self, size: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def key_of(self, row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in self.key_columns)

    def done(self) -> set[tuple[str, ...]]:
        return set(self._keys)

    def __contains__(self, key: tuple[str, ...]) -> bool:
        return key in self._keys

    def append(self, row: Mapping[str, Any]) -> bool:
        """Append ``row`` durably; False (and nothing written) if its key is already there."""
        key = self.key_of(row)
        if key in self._keys:
            return False
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise StoreError(f"row for {self.path.name} misses columns {missing}")
        self._write_raw(_line([row[c] for c in self.columns]))
        self._keys.add(key)
        return True

    def _write_raw(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def _well_formed(line: bytes, n_columns: int) -> bool:
    try:
        rows = list(csv.reader(io.StringIO(line.decode())))
    except (UnicodeDecodeError, csv.Error):
        return False
    return len(rows) == 1 and len(rows[0]) == n_columns
