"""The trained predictor of one device profile: one portable JSON file, rebuilt when stale.

``datasets/<profile>/bundle.json`` holds, for every layer type, the chosen estimator family
and its state (coefficients or XGBoost JSON: no pickles), what was measured of it (the
coverage rule's data, :mod:`dnnsplit.predictor.coverage`), the feature names, the CV table, the
library versions that produced it, a hash of the CSVs it was trained on, the profile's
reference-probe time, the per-call overhead, the weight-streaming cost of kernels
(``weight-streaming.json``, :mod:`dnnsplit.collectors.streaming`) and the model-level correction.

:func:`load_bundle` reads it; if it was written by another major version of XGBoost or another
bundle format, or its data hash no longer matches the CSVs beside it, it is rebuilt from those
CSVs (and saved), or, without CSVs, refused with a message saying what to do. A bundle
transferred from a base profile (:mod:`dnnsplit.predictor.transfer`) is rebuilt as a transfer,
also when its base was retrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dnnsplit.predictor.coverage import Coverage
from dnnsplit.predictor.errors import DnnsplitError
from dnnsplit.predictor.estimators import BundleFormatError, _Family

log = logging.getLogger("dnnsplit")
#: 2: with the measured range of every layer type (``coverage``)
BUNDLE_FORMAT = 2
BUNDLE_NAME = "bundle.json"
GROUND_TRUTH_NAME = "models.csv"
#: The single rounds that each ground-truth row combines (:mod:`dnnsplit.collectors.ground_truth`).
GROUND_TRUTH_ROUNDS_NAME = "models-rounds.csv"
STREAMING_NAME = "weight-streaming.json"


class ProfileError(DnnsplitError):
    """An unknown device profile or a profile folder without data."""


def library_versions() -> dict[str, str]:
    import numpy
    import sklearn
    import xgboost

    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("dnnsplit")
    except PackageNotFoundError:
        own = "unknown"
    return {"dnnsplit": own, "xgboost": xgboost.__version__, "scikit-learn": sklearn.__version__,
            "numpy": numpy.__version__}


def data_hash(folder: str | Path) -> str:
    """sha256 over the kernel CSVs and the weight-streaming fit of a profile folder (names and
    bytes)."""
    digest = hashlib.sha256()
    streaming = Path(folder) / STREAMING_NAME
    for path in kernel_csvs(folder) + ([streaming] if streaming.exists() else []):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def kernel_csvs(folder: str | Path) -> list[Path]:
    """The kernel CSVs of a profile folder (every CSV but the ground truth and its rounds)."""
    return [p for p in sorted(Path(folder).glob("*.csv"))
            if p.name not in (GROUND_TRUTH_NAME, GROUND_TRUTH_ROUNDS_NAME)]


def profile_dir(profile: str | Path) -> Path:
    """The folder of a profile: a path as given, or a shipped profile by name."""
    path = Path(profile)
    if path.is_dir():
        return path
    from dnnsplit.datasets import profiles, root

    shipped = root() / str(profile)
    if shipped.is_dir():
        return shipped
    raise ProfileError(f"unknown device profile {str(profile)!r}: shipped profiles are "
                       f"{', '.join(profiles()) or 'none'}; or give a folder of collected CSVs")


@dataclass
class Bundle:
    profile: str
    types: dict[str, _Family]
    fallback: _Family
    feature_names: list[str]
    reference_probe_ms: float
    call_overhead_ms: float
    correction: float = 1.0
    #: per kernel: ``per_mib * max(0, MiB of weights - threshold_mib)`` probe units, for
    #: weights up to ``cache_mib`` (:mod:`dnnsplit.collectors.streaming`); empty = none
    streaming: dict[str, float] = field(default_factory=dict)
    cv: dict[str, dict[str, float]] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    data_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    #: per layer type, what was measured (:mod:`dnnsplit.predictor.coverage`)
    coverage: dict[str, Coverage] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT, "profile": self.profile, "versions": self.versions,
            "data_hash": self.data_hash, "feature_names": self.feature_names,
            "reference_probe_ms": self.reference_probe_ms,
            "call_overhead_ms": self.call_overhead_ms, "correction": self.correction,
            "streaming": self.streaming, "cv": self.cv, "chosen": self.chosen,
            "rows": self.rows, "meta": self.meta,
            "types": {t: e.to_dict() for t, e in self.types.items()},
            "fallback": self.fallback.to_dict(),
            "coverage": {t: c.to_dict() for t, c in self.coverage.items()},
        }

    @property
    def runtime(self) -> tuple[str, int]:
        """``(Keras backend, intra-op threads)`` the profile was measured with: from the rows
        (``meta``), else from a name like ``cpu-2t-jax``, else TensorFlow with one thread."""
        import re

        backend, threads = self.meta.get("backend"), self.meta.get("threads")
        named = re.fullmatch(r"[a-z]+-(\d+)t-([a-z]+)", self.profile)
        if backend is None and named:
            backend = named.group(2)
        if threads is None and named:
            threads = int(named.group(1))
        return str(backend or "tensorflow"), int(threads or 1)

    def streaming_cost(self, weight_bytes: float) -> float:
        """Probe units a kernel with ``weight_bytes`` of weights pays in a model over alone
        (0 without a streaming fit)."""
        if not self.streaming:
            return 0.0
        mib = weight_bytes / 2.0 ** 20
        if mib > self.streaming["cache_mib"]:
            return 0.0  # streamed alone too: the benchmark already paid it
        return self.streaming["per_mib"] * max(0.0, mib - self.streaming["threshold_mib"])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Bundle":
        if data.get("format") != BUNDLE_FORMAT:
            raise BundleFormatError(f"bundle format {data.get('format')!r} is not "
                                    f"{BUNDLE_FORMAT}")
        written = str(data.get("versions", {}).get("xgboost", "0")).split(".")[0]
        installed = library_versions()["xgboost"].split(".")[0]
        if written != installed:
            raise BundleFormatError(f"bundle written with XGBoost {written}.x, installed "
                                    f"{installed}.x")
        try:
            return cls(
                profile=data["profile"],
                types={t: _Family.from_dict(e) for t, e in data["types"].items()},
                fallback=_Family.from_dict(data["fallback"]),
                feature_names=list(data["feature_names"]),
                reference_probe_ms=float(data["reference_probe_ms"]),
                call_overhead_ms=float(data["call_overhead_ms"]),
                correction=float(data.get("correction", 1.0)),
                streaming={k: float(v) for k, v in data.get("streaming", {}).items()},
                cv=dict(data.get("cv", {})), chosen=dict(data.get("chosen", {})),
                rows=dict(data.get("rows", {})), versions=dict(data.get("versions", {})),
                data_hash=str(data.get("data_hash", "")), meta=dict(data.get("meta", {})),
                coverage={t: Coverage.from_dict(c) for t, c in data["coverage"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleFormatError(f"malformed bundle: {exc}") from None

    def save(self, path: str | Path) -> Path:
        from dnnsplit.predictor.files import write_json_atomic

        return write_json_atomic(path, self.to_dict())


def _base_changed(bundle: Bundle) -> bool:
    """A transferred bundle (``meta["base"]``) whose base was retrained since."""
    base = bundle.meta.get("base")
    if not base:
        return False
    try:
        return load_bundle(base).data_hash != bundle.meta.get("base_hash")
    except DnnsplitError:
        return False  # the base is gone: the stored transfer is all there is


def load_bundle(profile: str | Path, rebuild: bool = True) -> Bundle:
    """The bundle of a profile; rebuilt from its CSVs when it cannot be used as stored."""
    folder = profile_dir(profile)
    path = folder / BUNDLE_NAME
    has_data = bool(kernel_csvs(folder))
    problem = None
    if path.exists():
        try:
            bundle = Bundle.from_dict(json.loads(path.read_text()))
            if not has_data or bundle.data_hash == data_hash(folder):
                if not _base_changed(bundle):
                    return bundle
                problem = f"its base profile {bundle.meta['base']} was retrained"
            else:
                problem = "its data (CSVs, weight-streaming fit) changed since it was trained"
        except (BundleFormatError, json.JSONDecodeError) as exc:
            problem = str(exc)
    else:
        problem = "no bundle.json"
    if not has_data:
        raise ProfileError(f"the predictor of {folder.name} cannot be used ({problem}) and there "
                           f"are no CSVs in {folder} to rebuild it from: collect with "
                           "`collectors collect` or reinstall dnnsplit")
    if not rebuild:
        raise BundleFormatError(f"bundle of {folder.name} cannot be used: {problem}")
    from dnnsplit.predictor.train import train
    from dnnsplit.predictor.transfer import base_of, train_transfer

    log.warning("rebuilding the predictor of %s from its CSVs (%s)", folder.name, problem)
    base = base_of(folder)
    bundle = train_transfer(folder, base) if base else train(folder)
    try:
        bundle.save(path)
    except OSError as exc:  # a read-only install still gets a working predictor
        log.warning("could not save the rebuilt bundle to %s: %s", path, exc)
    return bundle
