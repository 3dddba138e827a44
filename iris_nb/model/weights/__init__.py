"""Weights of the pretrained models (see :mod:`iris_nb.pretrained`)."""
