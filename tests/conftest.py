import os
import sys
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# The tests import dnnsplit as a user has it (pip install [-e] .): the repository root is not on
# sys.path (`python -m pytest` puts it there), so its folders predictor/, executor/, ... cannot
# be imported as top-level packages by mistake. The tests' own helpers stay importable as
# `tests.<package>.<module>`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
_tests = types.ModuleType("tests")
_tests.__path__ = [str(ROOT / "tests")]
sys.modules.setdefault("tests", _tests)


@pytest.fixture
def fresh_keras_session():
    """Layer names restart in the test, and Keras lets go of its models after it.

    Without a full garbage collection (``free_memory=False``): with TensorFlow loaded one takes
    about 0.3 s, which over the tests that use this fixture was two minutes of the default
    run; Python's own collector frees the cycles as it goes."""
    import keras

    keras.backend.clear_session(free_memory=False)
    yield
    keras.backend.clear_session(free_memory=False)
