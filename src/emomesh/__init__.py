"""Emomesh shared library: the one place for config, logging, metrics, server bootstrap,
the Triton client and the emotion label set. Services import from here; nothing is copied."""

from emomesh.labels import LABELS, NUM_LABELS, distribution_from_probs, polarity_of

__all__ = ["LABELS", "NUM_LABELS", "distribution_from_probs", "polarity_of"]
