"""Writing files so that nothing is lost, and the JSON/YAML round trip of config objects.

* :func:`write_text_atomic` and :func:`atomic_torch_save` write through a temporary file in
  the target folder and :func:`os.replace`, so a reader (or a resumed run) sees either the old
  file or the new one, never half of one.
* :class:`ConfigFiles` gives a dataclass with ``to_dict``/``from_dict`` the four methods
  ``to_json``/``from_json``/``to_yaml``/``from_yaml`` (used by Grid, NoiseConfig,
  TrainingConfig and RunConfig), and :func:`check_fields` refuses unknown keys the same way
  everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

__all__ = ["ConfigFiles", "atomic_torch_save", "check_fields", "read_config_text", "write_text_atomic"]


def _replace_atomically(path, write, binary: bool, mode: int | None = None) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb" if binary else "w") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` (folders created) so that the file is never half written."""
    return _replace_atomically(path, lambda stream: stream.write(text), binary=False)


def atomic_torch_save(payload, path, mode: int | None = None) -> Path:
    """``torch.save(payload, path)`` that never leaves a half-written file; ``mode``: file
    permission bits to give the new file (``None``: the process default)."""
    import torch

    return _replace_atomically(path, lambda stream: torch.save(payload, stream), binary=True, mode=mode)


def read_config_text(text_or_path, kind: str) -> str:
    """The text of a config given as text or as a file path.

    A :class:`os.PathLike` is always a file; a string is text when it holds a newline (or, for
    JSON, starts with ``{``), else the path of a file, which must exist.
    """
    if isinstance(text_or_path, os.PathLike):
        path = Path(text_or_path)
    elif isinstance(text_or_path, str):
        stripped = text_or_path.lstrip()
        if "\n" in text_or_path or (kind == "JSON" and stripped.startswith("{")):
            return text_or_path
        path = Path(text_or_path)
    else:
        raise TypeError(f"expected {kind} text or a file path, got {type(text_or_path).__name__}")
    if not path.is_file():
        raise FileNotFoundError(f"{str(text_or_path)[:80]!r} is neither {kind} text nor an existing {kind} file")
    return path.read_text()


def check_fields(cls, data, what: str, error=ValueError, hint: str = "") -> dict:
    """``data`` as a dict whose keys are all fields of dataclass ``cls``, or ``error``/TypeError."""
    if not isinstance(data, dict):
        raise TypeError(f"{what} is described by a dict, got {type(data).__name__}")
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"unknown {what} fields {unknown}; known fields are {known}{hint}")
    return data


class ConfigFiles:
    """Mixin: JSON and YAML text or files from ``to_dict()``, and back through ``from_dict()``.

    ``to_json(path)``/``to_yaml(path)`` return the text and, given a path, also write it
    atomically.  ``from_json``/``from_yaml`` take text or a path (see :func:`read_config_text`).
    ``_file_error`` is the exception raised for a YAML file that holds no mapping.
    """

    _file_error = ValueError

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text of this config; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            write_text_atomic(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path):
        """Read a config from JSON text or a JSON file."""
        return cls.from_dict(json.loads(read_config_text(text_or_path, "JSON")))

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """YAML text of this config; also written to ``path`` when given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text_atomic(path, text)
        return text

    @classmethod
    def from_yaml(cls, text_or_path):
        """Read a config from a YAML file, or from YAML text holding a newline."""
        import yaml

        data = yaml.safe_load(read_config_text(text_or_path, "YAML"))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise cls._file_error(f"a {cls.__name__} file must hold a mapping of its fields "
                                  f"(like 'key: value' lines), got {type(data).__name__}")
        return cls.from_dict(data)
