"""The reversion network, its model files and fast inference copies.

``Reverter`` is the IRIS network (exact at 512 pixels, smaller powers of two for tests
and notebooks; ``width=`` scales its channels, e.g. 0.25 for a ~16 times smaller model);
``Reverter.save`` / ``Reverter.load`` read and write model files (and bare
IRIS state dicts); ``optimize_for_inference`` makes a faster evaluation-only copy;
``InputStatistics`` summarises the training inputs for the out-of-distribution guard;
``RIM`` refines a two-output Reverter's maps with the gradient of their data misfit;
``SynthesisHead`` is the optional Cool-chic head (``Reverter(head=[...])``).
"""

from .attention import PixelSelfAttention2d
from .input_statistics import InputStatistics, pv_statistics
from .model_file import ModelFileError, ModelFileNotFoundError
from .optimize import fold_batch_norm, optimize_for_inference, set_fast_attention
from .head import SynthesisHead
from .reverter import INPUT_SPACES, OUTPUTS, REDUCTIONS, Reverter
from .rim import RIM

__all__ = [
    "Reverter",
    "RIM",
    "SynthesisHead",
    "OUTPUTS",
    "PixelSelfAttention2d",
    "ModelFileError",
    "ModelFileNotFoundError",
    "InputStatistics",
    "pv_statistics",
    "optimize_for_inference",
    "fold_batch_norm",
    "set_fast_attention",
    "INPUT_SPACES",
    "REDUCTIONS",
]
