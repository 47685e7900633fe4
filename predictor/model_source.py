"""Turn what a user typed (a keras.applications name or a model file) into a Keras model.

>>> model = load_model("resnet50")          # case-insensitive, weights=None, never a download
>>> model = load_model("path/to/model.keras")

Anything else raises :class:`~dnnsplit.predictor.errors.ModelLoadError` with a message that says
what would work.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from dnnsplit.predictor.errors import ModelLoadError
from dnnsplit.predictor.keras_env import import_keras

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
#: Input shape given to keras.applications models whose default input has unknown dimensions.
DEFAULT_IMAGE_SHAPE = (224, 224, 3)


def zoo_names() -> list[str]:
    """Models built by dnnsplit itself (not in keras.applications): AlexNet, SqueezeNet, ..."""
    from dnnsplit.predictor.zoo import ZOO

    return sorted(ZOO)


def model_names() -> list[str]:
    """Every name :func:`load_model` accepts besides a file: keras.applications, then the zoo."""
    return application_names() + zoo_names()


def application_names() -> list[str]:
    """Names of the keras.applications model constructors, e.g. ``['ConvNeXtBase', ...]``."""
    keras = import_keras()
    return sorted(
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


def load_model(source: str | Path, input_shape: tuple[int, ...] | None = None):
    """Return the Keras model named by ``source``.

    ``source`` is a keras.applications name (any case; built with ``weights=None``), a zoo name
    (:mod:`dnnsplit.predictor.zoo`: AlexNet, SqueezeNet, Pix2PixUNet) or the path of a ``.keras`` /
    ``.h5`` file. ``input_shape`` (without batch) is passed to the
    keras.applications constructor, e.g. ``(160, 160, 3)``.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix.lower() in MODEL_FILE_SUFFIXES or path.exists():
        return _load_file(path)
    return _build_application(text, input_shape)


def _build_application(name: str, input_shape):
    from dnnsplit.predictor.zoo import ZOO

    keras = import_keras()
    zoo = {n.lower(): n for n in ZOO}
    if name.lower() in zoo:
        builder = ZOO[zoo[name.lower()]]
        return builder(input_shape=tuple(input_shape)) if input_shape else builder()
    by_lower = {n.lower(): n for n in model_names()}
    canonical = by_lower.get(name.lower())
    if canonical is None:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(by_lower[c] for c in close)}?" if close else ""
        raise ModelLoadError(
            f"{name!r} is neither a model file ({', '.join(MODEL_FILE_SUFFIXES)}) nor a "
            f"keras.applications or zoo model.{hint} See `partition graph --list` for the names."
        )
    constructor = getattr(keras.applications, canonical)
    kwargs = {"weights": None}
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    try:
        model = constructor(**kwargs)
        if input_shape is None and any(d is None for d in model.inputs[0].shape[1:]):
            # e.g. MobileNetV3 builds with (None, None, 3): give it its documented default size
            model = constructor(weights=None, input_shape=DEFAULT_IMAGE_SHAPE)
    except ValueError as exc:  # e.g. an input shape the architecture refuses
        raise ModelLoadError(f"cannot build {canonical}: {_first_line(exc)}") from exc
    return model


def _load_file(path: Path):
    if not path.exists():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    if path.is_dir():
        raise ModelLoadError(
            f"{str(path)!r} is a directory: pass a .keras or .h5 file (SavedModel folders are "
            "not Keras 3 models; re-save with model.save('model.keras'))"
        )
    if path.suffix.lower() not in MODEL_FILE_SUFFIXES:
        raise ModelLoadError(
            f"{str(path)!r} is not a Keras model file: expected one of "
            f"{', '.join(MODEL_FILE_SUFFIXES)}"
        )
    _check_container(path)
    keras = import_keras()
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a broken file
        raise ModelLoadError(
            f"cannot load model file {str(path)!r}: {_first_line(exc)}"
        ) from exc


#: The first bytes of every HDF5 file (the .h5 format).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_container(path: Path) -> None:
    """A .keras file is a zip archive, a .h5 file an HDF5 one: say so plainly when the file
    is neither (Keras itself answers 'File not found' for a .keras file that is not a zip)."""
    import zipfile

    if path.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(
                f"{str(path)!r} is not a .keras model: a .keras file is a zip archive written by "
                "model.save('model.keras'), and this one is not (truncated, or another format "
                "renamed)")
        return
    with open(path, "rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise ModelLoadError(
                f"{str(path)!r} is not an HDF5 (.h5) model file: re-save the model with "
                "model.save('model.keras')")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
