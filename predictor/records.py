"""Reading measurement CSVs (the records of docs/design.md) with clear errors.

Writing them durably is the collectors' job (:mod:`dnnsplit.collectors.store`); reading them is
shared.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from dnnsplit.predictor.errors import DnnsplitError


class StoreError(DnnsplitError):
    """A CSV file is not what it should be (wrong header, malformed rows)."""


#: Columns of ``models.csv`` (whole-model ground truth) the predictor reads as numbers.
GROUND_TRUTH_NUMBERS = ("load_target", "load", "ref_probe_ms", "median_ms")


def read_rows(path: str | Path, columns: Sequence[str] | None = None,
              numeric: Sequence[str] = (), positive: Sequence[str] = ()) -> list[dict[str, str]]:
    """All rows of a CSV as dicts; with ``columns``, the header must hold them all. Every
    column in ``numeric`` must hold a finite number, every one in ``positive`` one above 0:
    the first row that does not is refused, naming the file, line and column."""
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
                _check_numbers(row, path, number, numeric, positive)
                rows.append(row)
            return rows
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StoreError(f"{path} is not a readable CSV file: {exc}") from None


def _check_numbers(row: Mapping[str, str], path: Path, number: int, numeric: Sequence[str],
                   positive: Sequence[str]) -> None:
    for column in dict.fromkeys([*numeric, *positive]):
        text = row.get(column)
        if text is None:
            raise StoreError(f"{path} has no column {column!r}")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise StoreError(f"{path}, line {number}: {column} is {text!r}, not a number")
        if column in positive and value <= 0:
            raise StoreError(f"{path}, line {number}: {column} is {text}, it must be above 0")


def reference_probe_ms(rows: Iterable[Mapping[str, str]]) -> float:
    """A profile's reference speed: the median probe time of its unloaded kernel rows
    (of all rows if none is unloaded)."""
    rows = list(rows)
    if not rows:
        raise StoreError("no measurement rows to take the reference probe time from")
    unloaded = [float(r["ref_probe_ms"]) for r in rows if float(r["load_target"]) == 0]
    return statistics.median(unloaded or [float(r["ref_probe_ms"]) for r in rows])
