"""NumPy references for the models' epoch figures (tests only)."""

import numpy as np


def log_softmax(logits):
    logits = np.asarray(logits, "float64")
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def sparse_ce(labels, logits):
    """Per-example sparse categorical cross-entropy on logits."""
    return -log_softmax(logits)[np.arange(len(labels)), np.asarray(labels)]


def binary_ce(labels, logits):
    """Per-example binary cross-entropy on logits."""
    z = np.asarray(logits, "float64").reshape(-1)
    t = np.asarray(labels, "float64").reshape(-1)
    return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


def accuracy(labels, logits):
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


BATCH_SIZES = (4, 8, 16)
