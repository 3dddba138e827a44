"""Model files: atomic writing and safe reading of Reverter weights with metadata.

A model file is a ``torch.save`` of a plain dictionary::

    {"format": "iris_nb.reverter", "format_version": 1,
     "state_dict": {name: tensor, ...},
     "metadata": {"grid": Grid.to_dict(), "width": float, "reduction": ...,
                  "input_space": "temperature" | "intensity" | "v_density",
                  "units": {space: str}, "iris_nb_version": ..., "provenance": {...},
                  "input_statistics": InputStatistics.to_dict() or None,
                  "created": ISO-8601 UTC, "parameters": int}}

It is read with ``torch.load(..., weights_only=True)``, so loading never runs code from
the file.  Bare IRIS state dicts (``torch.save(model.state_dict())``) load too; their
channel width is read from the tensor shapes (1 for IRIS).  Files without a ``"width"``
entry (written before it existed) have width 1.  Files without ``"input_statistics"`` (written
before the out-of-distribution guard, and bare state dicts) load with
``model.input_statistics = None``, which the model's repr notes in one line; ``revert`` then
checks nothing.  Statistics of a newer definition than this iris_nb knows are dropped the same way.
Files written before the input spaces were renamed say ``"T"``, ``"I"`` or ``"vrho"``; they load
as ``"temperature"``, ``"intensity"`` and ``"v_density"``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import torch

from .. import __version__
from .._files import atomic_torch_save
from ..grids import SEDIGISM, Grid, get_grid
from .architecture import ENCODER_STAGES, build_decoder, build_encoder, check_width, stage_range

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "ModelFileNotFoundError",
           "save_reverter", "load_reverter", "read_model_file", "infer_width"]

FORMAT = "iris_nb.reverter"
FORMAT_VERSION = 1
_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel / torch.compile


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or holds something other than a Reverter."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """The model file does not exist (also a :class:`FileNotFoundError`)."""


def save_reverter(model, path, provenance: dict | None = None) -> Path:
    """Write ``model`` with its metadata to ``path`` atomically; returns the path.

    The file is first written to a temporary file in the same folder and then moved over
    ``path`` with :func:`os.replace`, so an interrupted or failing save never leaves a
    half-written file and never destroys an existing one.
    """
    from .reverter import check_provenance

    if getattr(model, "inference_only", False):
        raise ValueError(
            "this model was made by optimize_for_inference (batch norms folded into the "
            "convolutions) and cannot be saved as a Reverter file; save the original model"
        )
    path = Path(path).expanduser()
    folder = path.parent
    if not folder.is_dir():
        raise ModelFileNotFoundError(f"cannot save model to {path}: folder {folder} does not exist")
    if path.is_dir():
        raise ModelFileError(f"cannot save model to {path}: it is a folder; give a file name like model.pt")
    merged = {**model.provenance, **check_provenance(provenance)}
    model.provenance = merged
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
        "metadata": {
            "grid": model.grid.to_dict(),
            "width": float(getattr(model, "width", 1.0)),
            "reduction": model.reduction,
            "input_space": model.input_space,
            "units": {space: unit.to_string() for space, unit in model.units.items()},
            "iris_nb_version": __version__,
            "provenance": merged,
            "input_statistics": _statistics_dict(model),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "parameters": model.num_parameters(),
        },
    }
    # only what differs from the IRIS network is written, so density-only files keep their form
    if tuple(getattr(model, "outputs", ("density",))) != ("density",):
        payload["metadata"]["outputs"] = list(model.outputs)
    if getattr(model, "head", None) is not None:
        payload["metadata"]["head"] = list(model.head.layers)
    mode = path.stat().st_mode & 0o777 if path.exists() else _default_file_mode()
    atomic_torch_save(payload, path, mode=mode)
    return path


def _statistics_dict(model) -> dict | None:
    stats = getattr(model, "input_statistics", None)
    return None if stats is None else stats.to_dict()


def _read_statistics(metadata: dict):
    """The InputStatistics stored in a file's metadata, or ``None`` (absent, or of a newer definition)."""
    from .input_statistics import DEFINITION, InputStatistics

    data = metadata.get("input_statistics")
    if data is None or int(data.get("definition", DEFINITION)) > DEFINITION:
        return None
    return InputStatistics.from_dict(data)


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def describe_load_error(err: Exception, path=None) -> str:
    """What a failed ``torch.load(path, weights_only=True)`` means, in words a user can act on."""
    import pickle
    import zipfile

    text = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) and "weights only" in text.lower():
        return ("it holds pickled Python objects, which could run code when loaded; it was refused "
                "without running them (only tensors and plain values are read). Re-save the weights "
                "from a trusted session with Reverter.save")
    try:  # torch files are zip archives: a zip start without a readable end is a file cut short
        cut = path is not None and Path(path).read_bytes()[:4] == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError:
        cut = False
    if cut or isinstance(err, (EOFError, OSError)) or "central directory" in text or "zip archive" in text:
        return ("the file is truncated or damaged (not a complete torch file); it was probably cut short by "
                "a full disk, an interrupted copy or a killed writer. Copy or write it again")
    first_line = text.splitlines()[0] if text else type(err).__name__
    return (f"it is not a (complete) torch file or holds objects other than tensors and plain values "
            f"({type(err).__name__}: {first_line[:200]})")


def read_model_file(path, map_location="cpu") -> tuple[dict, dict | None]:
    """Read a model file safely: ``(state_dict, metadata)``; ``metadata`` is ``None`` for
    a bare state dict.  Raises :class:`ModelFileError` naming the file and the problem."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileNotFoundError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        raise ModelFileError(f"model file {path} is a folder, expected a .pt file written by Reverter.save")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for foreign, truncated or unsafe files
        raise ModelFileError(f"cannot read model file {path}: {describe_load_error(err, path)}") from err
    if isinstance(content, dict) and "format" in content:
        if content.get("format") == "iris_nb.rim":
            raise ModelFileError(f"model file {path} holds a RIM (a Reverter with a refinement network); load it "
                                 "with iris_nb.model.RIM.load")
        if content.get("format") != FORMAT:
            raise ModelFileError(f"model file {path} has format {content.get('format')!r}, expected {FORMAT!r}")
        if int(content.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(
                f"model file {path} has format version {content.get('format_version')}, newer than "
                f"this iris_nb reads ({FORMAT_VERSION}); update iris_nb"
            )
        state, metadata = content.get("state_dict"), content.get("metadata")
        if not isinstance(state, dict) or not isinstance(metadata, dict):
            raise ModelFileError(f"model file {path} lacks its state_dict or metadata section")
    elif isinstance(content, dict):
        state, metadata = content, None
    else:
        raise ModelFileError(
            f"model file {path} holds a {type(content).__name__}, expected a Reverter file or a "
            "state dict (a dict of tensors)"
        )
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelFileError(f"model file {path} does not hold a state dict (a dict of name -> tensor)")
    return _strip_prefixes(state), metadata


def _strip_prefixes(state: dict) -> dict:
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _describe_mismatch(path, expected: dict, found: dict) -> str | None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, file has {tuple(found[k].shape)}"
              for k in expected if k in found and found[k].shape != expected[k].shape]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    return f"model file {path} holds a state dict of another architecture ({'; '.join(parts)})"


def infer_width(state: dict, grid: Grid | str) -> float | None:
    """Channel width of a bare state dict for ``grid``, or ``None`` if no width fits.

    Candidates are 1 (IRIS), then the out-channels of the first convolution and of the
    bottleneck convolution (``encoder._9_1_convolution``) divided by their width-1 counts;
    the first candidate whose encoder and decoder tensor shapes all match ``state`` wins.
    A width found this way builds the same layers as the one the model was made with, but
    may differ from it as a number (0.3 may come back as 0.3125).
    """
    from .reverter import grid_size

    size = grid_size(get_grid(grid))
    stages, _ = stage_range(size)
    candidates = [1.0]
    for k in (stages.start, 9):
        weight = state.get(f"encoder._{k}_1_convolution.weight")
        if isinstance(weight, torch.Tensor) and weight.dim() == 4:
            candidates.append(weight.shape[0] / ENCODER_STAGES[k].out_channels)
    for width in dict.fromkeys(candidates):
        try:
            check_width(width)
        except ValueError:
            continue
        with torch.device("meta"):  # shapes only, no memory and no initialisation
            parts = {"encoder": build_encoder(size, width), "decoder": build_decoder(size, width)}
        if all(tuple(getattr(state.get(f"{part}.{key}"), "shape", ())) == tuple(value.shape)
               for part, module in parts.items() for key, value in module.state_dict().items()):
            return width
    return None


def load_reverter(path, map_location="cpu", grid: Grid | str | None = None, width: float | None = None,
                  cls=None):
    """Build a :class:`~iris_nb.model.Reverter` from a model file (see :meth:`Reverter.load`).

    ``grid`` and ``width`` apply to bare state dicts only (default SEDIGISM and the width
    found by :func:`infer_width`, else 1); the model is moved to ``map_location`` when that
    names a device.
    """
    if width is not None:
        check_width(width)
    state, metadata = read_model_file(path, map_location=map_location)
    return build_reverter(state, metadata, path, map_location=map_location, grid=grid, width=width, cls=cls)


def build_reverter(state: dict, metadata: dict | None, path, map_location="cpu", grid=None, width=None, cls=None):
    """A Reverter from a state dict and its metadata (``None``: a bare IRIS state dict), as read
    from ``path`` (named in errors)."""
    if cls is None:
        from .reverter import Reverter as cls
    try:
        if metadata is None:
            grid = get_grid(grid) if grid is not None else SEDIGISM
            if width is None:
                width = infer_width(state, grid) or 1.0
            model = cls(grid=grid, width=width)
        else:
            model = cls(grid=Grid.from_dict(metadata["grid"]), reduction=metadata.get("reduction", "mean"),
                        input_space=metadata.get("input_space", "temperature"), provenance=metadata.get("provenance"),
                        width=metadata.get("width", 1.0), input_statistics=_read_statistics(metadata),
                        outputs=tuple(metadata.get("outputs") or ("density",)), head=metadata.get("head"))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"model file {path} has unusable metadata: {err}") from err
    problem = _describe_mismatch(path, model.state_dict(), state)
    if problem:
        hint = ("; if it is a model for a smaller grid, pass grid= to Reverter.load, and for a "
                "model of another channel width, width=" if metadata is None else "")
        raise ModelFileError(problem + hint)
    model.load_state_dict(state)
    if isinstance(map_location, (str, torch.device)):
        model.to(torch.device(map_location))
    return model
