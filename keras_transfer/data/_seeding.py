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


def resolve_seed(seed):
    """`seed`, or for None a fresh one from NumPy's global generator (so
    `keras.utils.set_random_seed` still makes unseeded pipelines repeat)."""
    if seed is None:
        import numpy as np

        return int(np.random.randint(0, 2**31 - 1))
    return int(seed)


def _epoch_counter():
    """A one-element dataset holding how often it was iterated before: 0, 1, ...

    The count lives in a CPU variable owned by this dataset, so each new
    dataset starts again at epoch 0, whatever ran before in the process.
    """
    import tensorflow as tf

    with tf.device("/cpu:0"):
        count = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    return tf.data.Dataset.range(1).map(lambda _: count.assign_add(1) - 1)


def seeded_examples(elements, seed, shuffle):
    """A `tf.data` stream of `(seed_pair, element)`, fixed by `seed` alone.

    `elements` is a structure (tuple) of arrays or `tf.RaggedTensor`s with
    equal first dimension `n`. Iteration `e` of the dataset (its epoch,
    counted per dataset from 0) yields the `n` elements, in the order of a
    permutation drawn from `(seed, e)` when `shuffle` (identity otherwise),
    each with an int64 seed pair derived from `(seed, e, position)`.

    Every draw is a stateless TensorFlow op (`stateless_fold_in`,
    `index_shuffle`), so unlike `Dataset.shuffle(seed=...)` or
    `Dataset.random(seed=...)`, which fold in TensorFlow's global seed and
    its op counter, the stream does not depend on the global seed nor on
    anything that ran before in the process: the same `seed` gives the same
    examples in the same order on every call, and a new draw each epoch.
    The cardinality is `n` per iteration.
    """
    import tensorflow as tf

    seed = int(seed)
    flat = [
        t if isinstance(t, tf.RaggedTensor) else tf.convert_to_tensor(t)
        for t in tf.nest.flatten(elements)
    ]
    n = int(flat[0].shape[0])
    key = tf.constant([seed, 0x7EA5], dtype=tf.int64)
    fold_in = tf.random.experimental.stateless_fold_in

    def epoch(e):
        epoch_key = fold_in(key, e)
        order_key = fold_in(epoch_key, 0)
        example_key = fold_in(epoch_key, 1)

        def example(position):
            index = position
            if shuffle:
                index = tf.random.experimental.index_shuffle(
                    position, seed=order_key, max_index=tf.constant(n - 1, tf.int64)
                )
            values = [tf.gather(t, index) for t in flat]
            return fold_in(example_key, position), tf.nest.pack_sequence_as(
                elements, values
            )

        return tf.data.Dataset.range(n).map(example)

    stream = _epoch_counter().flat_map(epoch)
    return stream.apply(tf.data.experimental.assert_cardinality(n))


def batch_seed(example_seeds):
    """One seed pair for a batch: derived from its first example's seed
    (independent of the per-example draws made from that seed)."""
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(example_seeds[0], 0x3B17)
