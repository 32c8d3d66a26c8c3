"""Extra gradient steps inside a TensorFlow train step (private).

Keras computes one gradient per `train_step`, in its backend trainer
(`keras/src/backend/tensorflow/trainer.py`), and offers no backend-neutral
way to take more. A model whose step alternates several updates on the same
batch (`MCDModel`: the paper's steps B and C after Keras's own step A) takes
them here, with the backend's own gradient, as Keras's trainers do. This
package (`keras_transfer.backend`) is the one place where the library
imports a backend; `keras_transfer/backend/jax.py` is the JAX twin.
"""

import keras
import tensorflow as tf


def extra_train_steps(model, data, steps, step_loss):
    """Runs `steps`, `[(name, variables), ...]`, after Keras's own step: for
    each, the gradient of `step_loss(name, y, y_pred, sample_weight, losses)`
    with respect to `variables` only, applied by `model.optimizer`, whose
    iteration count is kept (one optimizer step per batch)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    iterations = tf.identity(optimizer.iterations)
    for step, variables in steps:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = step_loss(step, y, y_pred, sample_weight, model.losses)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        optimizer.iterations.assign(iterations)

