"""Import Keras lazily, without TensorFlow's C++ start-up chatter on stderr.

Heavy imports live inside functions so that ``--help`` of every command answers at once.
"""

import os
import sys


def import_keras():
    """Return the ``keras`` module, importing it (and its backend) on first use."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow's absl logger writes "oneDNN custom operations are on..." straight to file
    # descriptor 2 during import, whatever TF_CPP_MIN_LOG_LEVEL says: mute the descriptor for
    # the import only. Python exceptions are unaffected.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import keras

                keras.backend.backend()
                if keras.backend.backend() == "tensorflow":
                    import tensorflow  # noqa: F401  (finishes its C++ start-up now)
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    return keras
