"""Models that ship inside the package, loadable with no download.

``iris_nb.pretrained("cmz-small")`` returns the SMALL-grid Reverter trained on the package's
own synthetic CMZ data (the default make_cmz family seen by the escape-probability LineObserver in 13CO(2-1), SEDIGISM survey noise, near- and far-side litter).  How it
was made, its training configuration and its test metrics are in ``model.provenance``; the
script that trains it is ``scripts/train_pretrained.py`` in the repository.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["available", "pretrained"]

_FILES = {"cmz-small": "cmz-small.pt", "cmz-sedigism": "cmz-sedigism.pt"}
_MADE_BY = {"cmz-small": "scripts/train_pretrained.py",
            "cmz-sedigism": "benchmarks/paper_scale.py --device cuda --ship (on a GPU; shipped only past the bar "
                            "of held-out loss <= 0.5 of the constant map and r >= 0.85)"}


def available() -> list[str]:
    """Names of the models that ship with this installation."""
    return sorted(name for name, file in _FILES.items() if resources.files("iris_nb.model.weights").joinpath(file).is_file())


def pretrained(name: str = "cmz-small", map_location="cpu"):
    """Load a shipped model by name (see :func:`available`); returns a :class:`~iris_nb.Reverter`.

    The model reverts PV images of its grid (``model.grid``) in its input units
    (``model.units``); use it through ``cube.iris.revert(model)``.
    """
    from .reverter import Reverter

    if name not in _FILES:
        raise ValueError(f"unknown pretrained model {name!r}; choose one of {sorted(_FILES)}")
    path = resources.files("iris_nb.model.weights").joinpath(_FILES[name])
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained model {name!r} is not in this installation ({path}); "
            f"it is made by {_MADE_BY[name]}"
        )
    with resources.as_file(path) as file:
        return Reverter.load(file, map_location=map_location)
