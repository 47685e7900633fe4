"""dnnsplit: predict per-layer latency of Keras models on devices, split them across devices, and
run the split as a pipeline.

One import namespace: ``dnnsplit.predictor``, ``dnnsplit.collectors``, ``dnnsplit.partition``,
``dnnsplit.executor`` and ``dnnsplit.datasets``. The repository keeps these packages in its
top-level folders (``predictor/``, ``collectors/``, ...); ``pyproject.toml`` maps each one under
``dnnsplit`` when installed, so dnnsplit lives beside other distributions that own top-level
names like ``executor`` or ``partition``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dnnsplit")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
