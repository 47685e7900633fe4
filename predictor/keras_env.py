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


def current_backend() -> str:
    """The Keras backend of this process: the imported one, else the one it would import."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


#: Keras backends whose import is safe to fork from (nothing of the runtime started yet).
WARM_START_BACKENDS = ("tensorflow", "jax")


def process_context():
    """The multiprocessing context for worker processes that run Keras.

    Importing the framework costs a fresh process seconds (Keras on TensorFlow about 5.5 s on
    the 2-core VM, on JAX 2.6 s). Under those backends, on platforms with a forkserver, the
    workers are forked from one server process that imported Keras once
    (:mod:`dnnsplit.predictor.warm_keras`) and has run nothing: a stage process of the
    executor starts in a fraction of a second, from the second run of a process on (a two-stage
    run of a small model on TensorFlow: 7.0 s -> 4.4 s for the first, 0.4 s for each later
    one; 2026-11-30). The framework's runtime (thread pools, devices; JAX's backends) starts in
    the worker, after the worker set its threads and CPUs. The server starts with the first
    worker, keeps the environment it started with, and exits with this process. Other backends
    get ``spawn`` (a fresh interpreter per worker). Either way the worker re-imports nothing of
    the caller's ``__main__`` script when started inside
    :func:`dnnsplit.collectors.timing.main_not_reimported`.
    """
    import multiprocessing

    if current_backend() in WARM_START_BACKENDS \
            and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["dnnsplit.predictor.warm_keras"])  # before it starts
        return ctx
    return multiprocessing.get_context("spawn")


def index_bounds(model) -> list[int | None]:
    """Per input of ``model``: for an integer input (token ids), the number of distinct ids it
    may hold (the smallest ``input_dim`` of the Embedding layers in the model, 2 without one);
    None for a float input. Random frames draw ids below it."""
    embeddings = [layer.input_dim for layer in _all_layers(model)
                  if type(layer).__name__ == "Embedding"]
    bound = min(embeddings) if embeddings else 2
    return [bound if "int" in str(t.dtype) else None for t in model.inputs]


def random_arrays(shapes, dtypes, bounds, rng) -> list:
    """Random input arrays: standard normal floats, integers below their bound."""
    return [rng.integers(0, bound, size=tuple(shape)).astype(dtype) if bound is not None
            else rng.standard_normal(tuple(shape)).astype(dtype)
            for shape, dtype, bound in zip(shapes, dtypes, bounds)]


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _all_layers(layer)
