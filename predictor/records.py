"""Reading measurement CSVs (the records of docs/design.md) with clear errors.

Writing them durably is the collectors' job (:mod:`dnnsplit.collectors.store`); reading them is
shared.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from dnnsplit.predictor.errors import DnnsplitError


class StoreError(DnnsplitError):
    """A CSV file is not what it should be (wrong header, malformed rows)."""


def read_rows(path: str | Path, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """All rows of a CSV as dicts; with ``columns``, the header must hold them all."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if columns is not None:
                missing = [c for c in columns if c not in header]
                if missing:
                    raise StoreError(
                        f"{path} is not a dnnsplit measurement file: its header lacks "
                        f"{', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}")
            rows = []
            for number, row in enumerate(reader, start=2):
                if None in row or any(v is None for v in row.values()):
                    raise StoreError(f"{path}, line {number}: wrong number of fields")
                rows.append(row)
            return rows
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StoreError(f"{path} is not a readable CSV file: {exc}") from None


def reference_probe_ms(rows: Iterable[Mapping[str, str]]) -> float:
    """A profile's reference speed: the median probe time of its unloaded kernel rows
    (of all rows if none is unloaded)."""
    rows = list(rows)
    if not rows:
        raise StoreError("no measurement rows to take the reference probe time from")
    unloaded = [float(r["ref_probe_ms"]) for r in rows if float(r["load_target"]) == 0]
    return statistics.median(unloaded or [float(r["ref_probe_ms"]) for r in rows])
