import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Layer names restart in every test, and memory of big models is released."""
    import keras

    keras.backend.clear_session()
    yield
    keras.backend.clear_session()
