"""Exception types of dnnsplit.

Every user mistake (a bad path, an unknown layer type or profile, a malformed file) raises a
subclass of :class:`DnnsplitError` whose message says what to do. The command-line tools print
such errors as one line and exit with status 2; anything else is a bug.
"""


class DnnsplitError(Exception):
    """Base class of all errors that are the user's to fix."""


class ModelLoadError(DnnsplitError):
    """A model name or file could not be turned into a Keras model."""


class SpecError(DnnsplitError):
    """A layer or model cannot be described (e.g. unknown input dimensions)."""
