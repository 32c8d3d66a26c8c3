"""Models and training runs for `tests/test_cross_backend.py`.

`python3 -m tests.cross_backend_runs FOLDER` (with KERAS_BACKEND set) loads
every `FOLDER/*.keras` saved on another backend, continues training it
exactly as `continue_training` does, and writes `FOLDER/<name>.<backend>.npz`
(weights after training, predictions) and `FOLDER/<name>.<backend>.keras`.
"""

import glob
import os
import sys

import numpy as np


def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(16, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    return x, y


def build_models():
    """name -> a compiled, trained-for-one-epoch model covering the package's
    layers (LoRA layers, Adapter, GradientReversal), `InferenceMode` through
    `build_classifier`, and the L2-SP wrapper."""
    import keras

    from keras_transfer import layers
    from keras_transfer import regularizers
    from keras_transfer import strategies

    keras.utils.set_random_seed(0)
    conv = keras.layers.Conv2D(4, 3, name="conv")
    conv.build((None, 6, 6, 3))
    dense = keras.layers.Dense(8, name="dense")
    dense.build((None, 4))
    einsum = keras.layers.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c", name="einsum")
    einsum.build((None, 8))
    inputs = keras.Input((6, 6, 3))
    h = layers.LoRAConv2D.from_layer(conv, lora_rank=2)(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = layers.LoRADense.from_layer(dense, lora_rank=2, lora_alpha=4.0)(h)
    h = layers.Adapter(bottleneck=2, name="adapter")(h)
    h = layers.GradientReversal(factor=0.5)(h)
    outputs = layers.LoRAEinsumDense.from_layer(einsum, lora_rank=2)(h)
    lora_model = keras.Model(inputs, outputs, name="layers_model")
    for i, v in enumerate(lora_model.weights):
        if "lora_kernel_b" in v.path or "up/kernel" in v.path:
            v.assign(np.random.default_rng(i).normal(size=v.shape) * 0.3)

    base = keras.Sequential(
        [keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="base_conv"),
         keras.layers.BatchNormalization(name="base_bn"),
         keras.layers.Dropout(0.5)],
        name="base",
    )
    classifier = strategies.build_classifier(base, num_classes=3, dropout=0.0)
    wrapped = keras.Sequential(
        [keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="l2sp_conv"),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="l2sp_head")],
        name="l2sp_inner",
    )
    l2sp = regularizers.apply_l2sp(wrapped, head=["l2sp_head"], alpha=0.5, beta=0.1)

    x, y = data()
    models = {"layers": lora_model, "classifier": classifier, "l2sp": l2sp}
    for model in models.values():
        model.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=model is not classifier),
        )
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert l2sp.weight_drift() > 0  # the L2-SP penalty is not zero
    return models


def continue_training(model):
    """Two more epochs (4 Adam steps, optimizer state as saved); returns the
    weights and the predictions as NumPy arrays."""
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return {
        **{f"w{i}": np.array(w) for i, w in enumerate(model.weights)},
        "predictions": np.array(model.predict(x, verbose=0)),
    }


def main(folder):
    import keras

    import keras_transfer  # noqa: F401 (registers the classes for loading)

    backend = keras.backend.backend()
    for path in sorted(glob.glob(os.path.join(folder, "*.keras"))):
        name = os.path.basename(path)[: -len(".keras")]
        if "." in name:  # written by another run
            continue
        model = keras.models.load_model(path)
        np.savez(os.path.join(folder, f"{name}.{backend}.npz"), **continue_training(model))
        model.save(os.path.join(folder, f"{name}.{backend}.keras"))
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
