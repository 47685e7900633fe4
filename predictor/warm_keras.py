"""Importing this module imports Keras and its backend (quietly): the forkserver of
:func:`dnnsplit.predictor.keras_env.process_context` preloads it, so that the worker processes
forked from it start with the framework imported."""

from dnnsplit.predictor.keras_env import import_keras

import_keras()
