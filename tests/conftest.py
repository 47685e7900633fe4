import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture
def fresh_keras_session():
    """Layer names restart in the test, and memory of big models is released after it."""
    import keras

    keras.backend.clear_session()
    yield
    keras.backend.clear_session()
