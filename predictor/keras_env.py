"""Keras at run time: imported lazily (without TensorFlow's start-up chatter on stderr), and
models compiled once per backend for the timing protocol and the executor alike.

Heavy imports live inside functions so that ``--help`` of every command answers at once.
"""

import os
import sys
from typing import Callable


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


def device_scope(device: str | None):
    """``keras.device(device)``, or a no-op scope when ``device`` is None."""
    import contextlib

    return import_keras().device(device) if device else contextlib.nullcontext()


def compiled(body: Callable, device: str | None = None, jax_args: tuple = ()) -> Callable:
    """``call(inputs) -> outputs``: ``body`` compiled once by the backend (``tf.function`` or
    ``jax.jit``; with JAX, ``jax_args`` are passed before the inputs), run under ``device``.

    Outputs are the backend's (possibly still running on an accelerator): block on them.
    """
    name = import_keras().backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        fn = tf.function(body, reduce_retracing=True)

        def call(inputs):
            with device_scope(device):
                return fn(inputs)
    elif name == "jax":
        import jax

        fn = jax.jit(body)

        def call(inputs):
            with device_scope(device):
                return fn(*jax_args, inputs)
    else:
        from dnnsplit.predictor.errors import DnnsplitError

        raise DnnsplitError(f"backend {name!r} is not supported: use tensorflow or jax")
    return call


def compiled_model(model, device: str | None = None) -> Callable:
    """:func:`compiled` forward pass of a Keras model in inference mode.

    With JAX the weights are arguments of the jitted function, not constants folded into it.
    """
    if import_keras().backend.backend() == "jax":
        weights = ([v.value for v in model.trainable_variables],
                   [v.value for v in model.non_trainable_variables])
        return compiled(lambda tv, ntv, xs: model.stateless_call(tv, ntv, xs, training=False)[0],
                        device, weights)
    return compiled(lambda xs: model(xs, training=False), device)
