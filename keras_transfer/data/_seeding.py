"""Stateless per-example seeding for Keras random layers inside `tf.data`.

Keras's random preprocessing layers draw from a `SeedGenerator` whose state is
a variable. Under `Dataset.map(..., num_parallel_calls>1)` the calls race on
that variable, so two runs with the same `seed` can hand different draws to
different examples. Here each example gets its own seed from a counter-based
stream instead, and every random draw of every layer derives from it.
"""

import contextlib

import keras

from keras_transfer._keras_private import all_layers


class _StatelessSeed(keras.random.SeedGenerator):
    """Returns a new seed derived from a fixed seed tensor at each draw.

    Built inside a traced `tf.data` function; `next()` is called at trace
    time, so the Python counter only numbers the draws in the graph.
    """

    def __init__(self, seed_tensor):
        # No `super().__init__()`: no state variable is wanted.
        self._seed_tensor = seed_tensor
        self._count = 0

    def next(self, ordered=True):
        import tensorflow as tf

        self._count += 1
        return tf.random.experimental.stateless_fold_in(
            self._seed_tensor, self._count
        )


def _random_layers(layers):
    found = []
    for layer in layers:
        for sub in all_layers(layer):
            if hasattr(sub, "generator") and hasattr(sub, "_get_seed_generator"):
                found.append(sub)
    return found


@contextlib.contextmanager
def stateless_seeds(layers, seed_tensor):
    """Makes every random layer in `layers` draw from `seed_tensor`."""
    generator = _StatelessSeed(seed_tensor)
    patched = _random_layers(layers)
    for layer in patched:
        # `object.__setattr__` bypasses Keras's attribute tracking.
        object.__setattr__(
            layer, "_get_seed_generator", lambda backend=None: generator
        )
    try:
        yield generator
    finally:
        for layer in patched:
            object.__delattr__(layer, "_get_seed_generator")


def seed_pairs(seed):
    """A `tf.data` stream of int64 seed pairs, new each epoch, fixed by `seed`.

    `Dataset.random` also folds in TensorFlow's global seed (as every seeded
    TF op does), so the stream is fixed by `seed` *and* the global seed at
    the time the dataset is built."""
    import tensorflow as tf

    return tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True
    ).batch(2, drop_remainder=True)

