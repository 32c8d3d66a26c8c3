"""Epoch figures that equal the figure on all the data at once (private).

Keras's `Mean` tracker updated with one scalar per batch averages the batch
means, which is wrong whenever batches differ in size (the last one) or carry
different numbers of labelled examples (masked labels, one domain larger than
the other). Every figure here is a `Mean` updated with the batch's *count*
(`sample_weight=count`), so its epoch value is `sum_b count_b * value_b /
sum_b count_b`: the mean over all examples. The reported `loss` is the sum of
such count-weighted terms, each with its own count, so it equals the total
loss computed on all the data at once (for fixed weights).
"""

import keras
from keras import ops

from keras_transfer import _keras_private


def loss_mean(name, direction="down"):
    """A count-weighted `Mean` that `EarlyStopping` knows to minimise.

    `direction=None` leaves the direction unknown (Keras then asks for
    `mode=`), for figures with no better side, such as a domain classifier's
    loss in an adversarial game.
    """
    metric = keras.metrics.Mean(name=name)
    if direction is not None:
        metric._direction = direction
    return metric


def batch_size(x):
    """Number of examples in a batch tensor, as float32."""
    return ops.cast(ops.shape(x)[0], "float32")


class TotalLoss(keras.metrics.Metric):
    """`loss` = sum over named terms of their count-weighted means."""

    def __init__(self, terms, name="loss"):
        super().__init__(name=name)
        self.term_names = list(terms)
        self.terms = [
            keras.metrics.Mean(name=f"{name}_{term}") for term in self.term_names
        ]
        self._direction = "down"

    def add(self, term, value, count):
        metric = self.terms[self.term_names.index(term)]
        metric.update_state(ops.cast(value, "float32"), sample_weight=count)

    def update_state(self, *args, **kwargs):
        raise NotImplementedError("Use `TotalLoss.add(term, value, count)`.")

    def reset_state(self):
        for metric in self.terms:
            metric.reset_state()

    def result(self):
        total = ops.zeros((), "float32")
        for metric in self.terms:
            total = total + metric.result()
        return total


def reported_metrics(keras_metrics, own, total):
    """`model.metrics`: Keras's compiled metrics (without its batch-size
    weighted `loss` tracker when an exact `total` replaces it), then `own` in
    a group that `EarlyStopping` reads directions from, then `total`."""
    skip = {id(m) for m in own} | {id(total)}
    kept = [
        m
        for m in keras_metrics
        if id(m) not in skip
        and not (
            total is not None
            and m.name == "loss"
            and isinstance(m, keras.metrics.Mean)
        )
    ]
    group = [_keras_private.monitorable_group(own)]
    return kept + group + ([total] if total is not None else [])
