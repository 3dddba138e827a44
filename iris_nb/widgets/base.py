"""Shared pieces of the iris_nb widgets: inline error messages, PNG previews, a config-valued base.

Every widget in :mod:`iris_nb.widgets` edits one package configuration value (a reduction
string, a noise config, a training config...).  :class:`ConfigWidget` gives them the same
surface:

* ``.value`` -- the configuration value; assigning an impossible one does not raise but
  shows a message in the widget (:class:`ErrorMessage`) and keeps the last valid value;
* ``.observe(handler, names="value")`` -- traitlets observation, as on any ipywidget;
* ``.widget`` -- the top-level ipywidgets container, and rich display of the object itself;
* ``.to_dict()`` / ``.from_dict()`` -- the round trip with the config files used by the CLI.

Previews are drawn with matplotlib on a figure that pyplot never sees and sent to the
browser as PNG bytes in an :class:`ipywidgets.Image`, so they work without ipympl.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
import html
import io

import ipywidgets as ipw
import traitlets

__all__ = ["ErrorMessage", "ConfigWidget", "config_entry", "render_png", "report_errors"]

_STYLE = {
    "error": "color:#a40000;background:#fdecea;border-left:4px solid #d32f2f;",
    "warning": "color:#6b4e00;background:#fff8e1;border-left:4px solid #f9a825;",
    "info": "color:#0b3d66;background:#e8f1fb;border-left:4px solid #1976d2;",
}


class ErrorMessage:
    """An inline, visible message for bad input, shown instead of a traceback.

    ``.widget`` is an :class:`ipywidgets.HTML` that is hidden while there is no message.
    """

    def __init__(self) -> None:
        self.widget = ipw.HTML(value="", layout=ipw.Layout(display="none"))
        self.widget.add_class("iris-nb-message")
        self._text = ""

    @property
    def text(self) -> str:
        """The message now shown (plain text; ``""`` when hidden)."""
        return self._text

    def show(self, text: str, level: str = "error") -> None:
        """Show ``text`` (plain text, HTML-escaped) styled as ``"error"``, ``"warning"`` or ``"info"``."""
        if level not in _STYLE:
            raise ValueError(f"level must be one of {sorted(_STYLE)}, got {level!r}")
        self._text = str(text)
        self.widget.value = (
            f'<div style="{_STYLE[level]}padding:4px 8px;margin:2px 0;font-size:0.9em;">'
            f"{html.escape(self._text)}</div>"
        )
        self.widget.layout.display = None

    def clear(self) -> None:
        """Hide the message."""
        self._text = ""
        self.widget.value = ""
        self.widget.layout.display = "none"


@contextlib.contextmanager
def report_errors(message: ErrorMessage, exceptions=(ValueError, TypeError)):
    """Context manager for widget callbacks: show ``exceptions`` in ``message``, do not raise.

    Use it around the body of a button or observer callback so a user's bad input becomes a
    visible line in the widget rather than a traceback in the log.  Other exceptions (bugs)
    still propagate.
    """
    try:
        yield
    except exceptions as err:
        message.show(f"{type(err).__name__}: {err}")


def render_png(draw, figsize=(5.0, 3.2), dpi: int = 80) -> bytes:
    """PNG bytes of a figure drawn by ``draw(ax)`` on a fresh, pyplot-free matplotlib figure.

    ``figsize`` is in inches; the image is ``figsize * dpi`` pixels.  Nothing is shown in
    the notebook and no figure is left open.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig.add_subplot())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def config_entry(data, key: str, is_entry, example: str):
    """The ``key`` entry of a run config given whole, or ``data`` itself when it is the entry.

    ``data`` is ``None``, the entry (``is_entry(data)`` is true), a run-config dict (a dict
    without ``key`` means the run default, ``None``) or an object with a ``key`` attribute
    such as a :class:`~iris_nb.train.run.RunConfig`.  ``example`` shows the entry in the
    TypeError raised for anything else.
    """
    if data is None or is_entry(data):
        return data
    if isinstance(data, Mapping):
        return data.get(key)
    if hasattr(data, key):
        return getattr(data, key)
    raise TypeError(f"from_dict expects a dict such as {{'{key}': {example}}} or a config with a '{key}' field, "
                    f"got {type(data).__name__}")


class ConfigWidget(traitlets.HasTraits):
    """Base of the iris_nb widgets: an observable, validated configuration ``value``.

    Subclasses implement :meth:`check_value` (return the normalised value or raise
    ``ValueError``/``TypeError`` with an actionable message), build ``self._widget`` (the
    top-level container, which should include ``self.error.widget``), and implement
    :meth:`to_dict` / :meth:`from_dict`.
    """

    value = traitlets.Any(help="the configuration value this widget edits")

    def __init__(self, value, **kwargs) -> None:
        value = self.check_value(value)  # bad construction arguments raise here
        self.error = ErrorMessage()
        self._widget = None
        super().__init__(value=value, **kwargs)

    # ---------------------------------------------------------------- validation
    def check_value(self, value):
        """Return ``value`` normalised, or raise ValueError/TypeError saying what to fix."""
        raise NotImplementedError

    @traitlets.validate("value")
    def _validate_value(self, proposal):
        try:
            new = self.check_value(proposal["value"])
        except (ValueError, TypeError) as err:
            self.error.show(str(err))
            return self.value  # the value stays valid; the message says why
        self.error.clear()
        return new

    # ------------------------------------------------------------------- config
    def to_dict(self) -> dict:
        """The value as a plain-JSON dict, in the field names of the CLI config files."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data, **kwargs):
        """A widget holding the value described by ``data`` (the output of :meth:`to_dict`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ display
    @property
    def widget(self) -> ipw.Widget:
        """The top-level ipywidgets container (embed it in your own layouts)."""
        if self._widget is None:
            raise RuntimeError(f"{type(self).__name__} did not build its widget")
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The container's widget view, with this object's repr as the plain-text fallback."""
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = repr(self)
        return bundle

    def close(self) -> None:
        """Close the front-end views of this widget and all its children."""
        stack = [self.widget]
        while stack:
            item = stack.pop()
            stack.extend(getattr(item, "children", ()))
            item.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value!r})"
