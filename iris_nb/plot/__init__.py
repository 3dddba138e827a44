"""The paper's views: PV images, top-down maps, l-b maps, ensembles, residuals and loss curves,
with published CMZ orbit models drawn over them.

Every function draws with matplotlib, labels every axis and colorbar with its unit, leaves
NaN pixels blank, returns the :class:`~matplotlib.axes.Axes` it drew on (or the
:class:`~matplotlib.figure.Figure` for multi-panel views) and never calls ``plt.show``.

Inputs follow DESIGN.md section 3: a PV image is a DataArray with dims ``(lon, velocity)``
(any order), a top-down map has dims ``(distance, lon)``; the data and every coordinate carry
astropy-parsable ``attrs["units"]``.  Longitude is shown in deg, wrapped to (-180, 180] and
increasing to the *left* (Galactic convention) in every view, so panels line up.
"""

from ._common import KINDS, STRETCHES
from .maps import pv_image, side_by_side, top_down
from .orbits import orbit, published_orbits
from .overlays import lb_map, overlay_orbits
from .panels import consistency, ensemble, truth_vs_prediction
from .training import loss_curves

__all__ = ["pv_image", "top_down", "side_by_side", "lb_map", "overlay_orbits", "orbit", "published_orbits",
           "ensemble", "truth_vs_prediction", "consistency", "loss_curves"]
