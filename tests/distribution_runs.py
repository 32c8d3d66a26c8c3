"""Multi-device runs for `tests/test_distribution.py`, one per subprocess.

`python3 -m tests.distribution_runs NAME` runs one check on 2 host devices
and prints one JSON line `RESULT {...}`. The environment (KERAS_BACKEND,
XLA_FLAGS) is set by the caller before Keras is imported.
"""

import contextlib
import json
import sys

import numpy as np


def _seq(keras, units_in, units_out, seed, activation=None, name=None):
    return keras.Sequential(
        [
            keras.Input((units_in,)),
            keras.layers.Dense(
                units_out,
                activation=activation,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            ),
        ],
        name=name,
    )


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(16, 4)).astype("float32")
    xt = (rng.normal(size=(16, 4)) + 1.0).astype("float32")
    ys = rng.integers(0, 3, 16)
    yb = rng.integers(0, 2, 16)
    return xs, xt, ys, yb


def _cases(keras):
    """name -> make() returning (model, x, y, compile kwargs)."""
    from keras_transfer import strategies
    from keras_transfer.models import DomainAdversarialModel
    from keras_transfer.models import Distiller
    from keras_transfer.models import MultiTaskModel

    xs, xt, ys, yb = _data()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def lora():
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8, activation="relu", name="d1"),
                keras.layers.Dense(3, name="d2"),
            ]
        )
        model.set_weights(
            [np.random.default_rng(i).normal(size=w.shape).astype("float32")
             for i, w in enumerate(model.get_weights())]
        )
        model, _ = strategies.apply_lora(
            model, lora_rank=2, targets=keras.layers.Dense
        )
        for i, v in enumerate(model.weights):
            if "lora_kernel" in v.path:  # B = 0 would hide A's gradient
                v.assign(np.random.default_rng(10 + i).normal(size=v.shape) * 0.1)
        return model, xs, ys, {"loss": ce}

    def dann():
        model = DomainAdversarialModel(
            _seq(keras, 4, 6, 1, "relu"), _seq(keras, 6, 3, 2),
            _seq(keras, 6, 1, 3), factor=0.5,
        )
        return model, {"source": xs, "target": xt}, ys, {}

    def distiller():
        model = Distiller(
            _seq(keras, 4, 3, 5), _seq(keras, 4, 3, 6), alpha=0.5,
            temperature=2.0,
        )
        return model, xs, ys, {}

    def multi_task():
        labels = {"a": ys.copy(), "b": yb.copy()}
        labels["a"][:3] = -1  # masked labels: the mean is over 13 examples
        init = keras.initializers.GlorotUniform
        heads = {
            "a": keras.layers.Dense(3, kernel_initializer=init(7), name="ha"),
            "b": keras.layers.Dense(2, kernel_initializer=init(8), name="hb"),
        }
        model = MultiTaskModel(_seq(keras, 4, 6, 1, "relu"), heads)
        return model, xs, labels, {"loss": ce}

    return {"lora": lora, "dann": dann, "distiller": distiller,
            "multi_task": multi_task}


def _fit(keras, make, distribution):
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    with scope:
        model, x, y, kwargs = make()
        model.compile(optimizer=keras.optimizers.Adam(0.01), **kwargs)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return model, [np.array(w) for w in model.trainable_weights]


def data_parallel():
    """Weights after 4 Adam steps: DataParallel on 2 devices vs 1 device."""
    import keras

    result = {}
    for name, make in _cases(keras).items():
        _, one = _fit(keras, make, None)
        model, two = _fit(keras, make, keras.distribution.DataParallel())
        result[name] = {
            "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
            "moved": max(float(np.abs(a).max()) for a in two),
            "devices": len(model.trainable_weights[0].value.sharding.device_set),
        }
    return result


def _grouped_fit(keras, distribution):
    """GradualUnfreezer + DiscriminativeLR: 3 epochs of 2 Adam steps, one
    stage per epoch (head; + top group; + bottom group), group rates
    x1, x0.5, x0.25."""
    from keras_transfer import callbacks

    xs, _, ys, _ = _data()
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    with scope:
        init = keras.initializers.GlorotUniform
        inputs = keras.Input((4,))
        x = keras.layers.Dense(6, "relu", kernel_initializer=init(1), name="g0")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.Dense(6, "relu", kernel_initializer=init(2), name="g1")(x)
        outputs = keras.layers.Dense(3, kernel_initializer=init(3), name="head")(x)
        model = keras.Model(inputs, outputs)
        bn = model.get_layer("bn")
        bn.moving_mean.assign(np.linspace(-0.5, 0.5, 6).astype("float32"))
        groups = [
            [model.get_layer("g0"), bn], [model.get_layer("g1")]
        ]
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=ce)
        history = model.fit(
            xs, ys, batch_size=8, epochs=3, shuffle=False, verbose=0,
            callbacks=[
                callbacks.GradualUnfreezer(groups, epochs_per_stage=1),
                callbacks.DiscriminativeLR(groups, factor=0.5),
            ],
        )
    return model, {v.path: np.array(v) for v in model.weights}, history


def grouped_data_parallel():
    """GradualUnfreezer + DiscriminativeLR: DataParallel on 2 devices vs 1."""
    import keras

    _, one, history_one = _grouped_fit(keras, None)
    model, two, history_two = _grouped_fit(
        keras, keras.distribution.DataParallel()
    )
    initial = _grouped_initial(keras)
    return {
        "max_abs_diff": max(
            float(np.abs(one[p] - two[p]).max()) for p in one
        ),
        "moved": {
            p: float(np.abs(two[p] - initial[p]).max()) for p in two
        },
        "stages": history_two.history["unfreeze_stage"],
        "stages_one": history_one.history["unfreeze_stage"],
        "devices": len(model.trainable_weights[0].value.sharding.device_set),
    }


def _grouped_initial(keras):
    """The same model's weights before training (same seeds)."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, "relu", kernel_initializer=init(1), name="g0")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(6, "relu", kernel_initializer=init(2), name="g1")(x)
    outputs = keras.layers.Dense(3, kernel_initializer=init(3), name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("bn").moving_mean.assign(
        np.linspace(-0.5, 0.5, 6).astype("float32")
    )
    return {v.path: np.array(v) for v in model.weights}


def _bert(keras):
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=6, dropout=0.0,
    )
    inputs = backbone.input
    pooled = backbone(inputs)["pooled_output"]
    logits = keras.layers.Dense(2, name="logits")(pooled)
    return keras.Model(inputs, logits, name="classifier")


def _bert_inputs():
    rng = np.random.default_rng(1)
    return {
        "token_ids": rng.integers(1, 50, (8, 6)).astype("int32"),
        "segment_ids": np.zeros((8, 6), "int32"),
        "padding_mask": np.ones((8, 6), "int32"),
    }, rng.integers(0, 2, 8)


def _keras_hub_style_map(keras, mesh):
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["token_embedding/embeddings"] = (None, "model")
    layout_map[".*(query|key|value)/kernel"] = (None, "model", None)
    layout_map[".*(query|key|value)/bias"] = ("model", None)
    layout_map[".*attention_output/kernel"] = ("model", None, None)
    layout_map[".*feedforward_intermediate_dense/kernel"] = (None, "model")
    layout_map[".*feedforward_output_dense/kernel"] = ("model", None)
    return layout_map


def _spec(variable):
    return [None if a is None else str(a) for a in variable.value.sharding.spec]


def model_parallel():
    """A LoRA BERT classifier sharded over a (1, 2) mesh by peft_layout_map."""
    import keras

    from keras_transfer import distribution as kt_distribution
    from keras_transfer import strategies

    host, _ = strategies.apply_lora(
        _bert(keras), lora_rank=2, targets=r"(query|value|intermediate_dense)$"
    )
    for i, v in enumerate(host.weights):
        if "lora_kernel_b" in v.path:
            v.assign(np.random.default_rng(i).normal(size=v.shape) * 0.1)
    mesh = keras.distribution.DeviceMesh(
        (1, 2), ("batch", "model"), keras.distribution.list_devices()
    )
    plain_map = _keras_hub_style_map(keras, mesh)
    layout_map = kt_distribution.peft_layout_map(plain_map, host)
    distribution = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    sharded = kt_distribution.distribute_model(host, distribution)
    x, y = _bert_inputs()
    result = {"specs": {}, "plain_map_base_kernel": None}
    for v in sharded.weights:
        if "query" in v.path or "intermediate_dense" in v.path:
            result["specs"][v.path] = _spec(v)
    # What the plain keras-hub-style map gives the wrapped kernel: nothing.
    result["plain_map_base_kernel"] = str(
        plain_map["transformer_layer_0/self_attention_layer/query/base/kernel"]
    )
    with distribution.scope():
        out_sharded = np.array(sharded.predict(x, verbose=0))
    out_host = np.array(host.predict(x, verbose=0))
    result["output_diff"] = float(np.abs(out_sharded - out_host).max())
    result["output_scale"] = float(np.abs(out_host).max())
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    host.compile(optimizer=keras.optimizers.SGD(0.5), loss=ce)
    host.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    with distribution.scope():
        sharded.compile(optimizer=keras.optimizers.SGD(0.5), loss=ce)
        sharded.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    diffs = [
        float(np.abs(np.array(a) - np.array(b)).max())
        for a, b in zip(host.trainable_weights, sharded.trainable_weights)
    ]
    result["trained_diff"] = max(diffs)
    result["n_trainable"] = len(diffs)
    result["lora_b_moved"] = max(
        float(np.abs(np.array(v) - 0).max())
        for v in sharded.trainable_weights if "lora_kernel_b" in v.path
    )
    return result


def keras_lora():
    """Keras's own `enable_lora` under a loose `.*dense.*kernel` pattern."""
    import keras

    from keras_transfer import distribution as kt_distribution

    def build():
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, name="dense_a"),
             keras.layers.Dense(2, name="dense_b")]
        )
        for layer in model.layers:
            layer.enable_lora(3)
        return model

    host = build()
    mesh = keras.distribution.DeviceMesh(
        (1, 2), ("batch", "model"), keras.distribution.list_devices()
    )
    plain_map = keras.distribution.LayoutMap(mesh)
    plain_map[".*dense.*kernel"] = (None, "model")
    result = {}
    try:
        plain = keras.distribution.ModelParallel(
            layout_map=plain_map, batch_dim_name="batch"
        )
        with plain.scope():
            plain_model = build()
        result["plain_error"] = None
        result["plain_specs"] = {v.path: _spec(v) for v in plain_model.weights}
    except Exception as e:  # the rank 3 does not split over 2 devices
        result["plain_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    layout_map = kt_distribution.peft_layout_map(plain_map, host)
    distribution = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    sharded = kt_distribution.distribute_model(host, distribution)
    result["specs"] = {v.path: _spec(v) for v in sharded.weights}
    x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    with distribution.scope():
        out = np.array(sharded.predict(x, verbose=0))
    result["output_diff"] = float(np.abs(out - np.array(host(x))).max())
    return result


def bad_input():
    """The errors a user gets for a wrong distribution setup."""
    import keras

    from keras_transfer import distribution as kt_distribution

    errors = {}

    def catch(name, fn):
        try:
            fn()
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)

    data_parallel = keras.distribution.DataParallel()
    catch("odd_batch", lambda: kt_distribution.check_distribution(
        data_parallel, batch_size=7))
    catch("odd_last_batch", lambda: kt_distribution.check_distribution(
        data_parallel, batch_size=8, num_samples=21))
    catch("not_a_distribution", lambda: kt_distribution.check_distribution(
        "data_parallel"))
    errors["shards"] = kt_distribution.check_distribution(
        data_parallel, batch_size=8, num_samples=24)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d")])
    mesh = keras.distribution.DeviceMesh(
        (1, 2), ("batch", "model"), keras.distribution.list_devices()
    )

    def map_with(pattern, axes):
        layout_map = keras.distribution.LayoutMap(mesh)
        layout_map[pattern] = axes
        return layout_map

    catch("unmatched_pattern", lambda: kt_distribution.peft_layout_map(
        map_with(".*query/kernel", (None, "model")), model))
    catch("wrong_rank", lambda: kt_distribution.peft_layout_map(
        map_with(".*d/kernel", (None, None, "model")), model))
    catch("not_dividing", lambda: kt_distribution.peft_layout_map(
        map_with(".*d/bias", ("model",)), keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3, name="d")])))
    catch("unknown_axis", lambda: kt_distribution.peft_layout_map(
        map_with(".*d/kernel", (None, "tensor")), model))
    return errors


def uneven_predict():
    """`RawInputClassifier.predict` / `evaluate` and the CLI's predict and
    evaluate with `--distribution data_parallel` on an uneven last batch
    (5 images in batches of 4 on 2 devices: a last batch of 1)."""
    import os
    import tempfile

    import keras

    from keras_transfer import cli
    from keras_transfer.models import RawInputClassifier

    def classifier():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(2, activation="softmax", dtype="float32")(x)
        return RawInputClassifier(keras.Model(inputs, outputs), ["a", "b"], "image",
                                  image_size=(8, 8))

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (5, 8, 8, 3)).astype("float32")
    y = np.array([0, 1, 0, 1, 1])
    model = classifier()
    expected = model.predict(x, batch_size=4, verbose=0)
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "model.keras")
    model.save(path)
    images = os.path.join(folder, "images")
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y)):
        os.makedirs(os.path.join(images, "ab"[label]), exist_ok=True)
        Image.fromarray(image.astype("uint8")).save(os.path.join(images, "ab"[label], f"{i}.png"))
    files = sorted(
        os.path.join(images, c, f) for c in "ab" for f in os.listdir(os.path.join(images, c))
    )
    from_files = model.predict(files, batch_size=4, verbose=0)

    result = {}
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    try:
        distributed = classifier()
        distributed.set_weights(model.get_weights())
        result["predict_max_abs_diff"] = float(
            np.abs(distributed.predict(x, batch_size=4, verbose=0) - expected).max())
        distributed.compile(loss="sparse_categorical_crossentropy")
        try:
            distributed.evaluate(x, y, batch_size=4, verbose=0)
            result["evaluate_error"] = None
        except ValueError as e:
            result["evaluate_error"] = str(e)
        out = os.path.join(folder, "p.json")
        result["cli_predict_code"] = cli.main(
            ["predict", path, *files, "--batch-size", "4", "--output", out,
             "--distribution", "data_parallel"])
        with open(out) as f:
            rows = json.load(f)
        got = np.array([[r["probabilities"][c] for c in "ab"] for r in rows])
        result["cli_predict_max_abs_diff"] = float(np.abs(got - from_files).max())
        result["cli_evaluate_code"] = cli.main(
            ["evaluate", path, "--data", images, "--split", "all", "--batch-size", "4",
             "--logdir", os.path.join(folder, "logs"), "--run-name", "e", "--verbose", "0",
             "--distribution", "data_parallel"])
        with open(os.path.join(folder, "logs", "e", "evaluation.json")) as f:
            evaluation = json.load(f)
        truth = np.array([0 if "/a/" in f else 1 for f in files])
        result["cli_evaluate_accuracy"] = evaluation["accuracy"]
        result["expected_accuracy"] = float(np.mean(from_files.argmax(-1) == truth))
        result["cli_odd_batch_code"] = cli.main(
            ["predict", path, *files, "--batch-size", "3", "--distribution", "data_parallel"])
    finally:
        keras.distribution.set_distribution(None)
    return result


def mirrored(name):
    """TensorFlow MirroredStrategy over 2 logical CPUs vs one device."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    def plain():
        model = _seq(keras, 4, 3, 9)
        xs, _, ys, _ = _data()
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return model, xs, ys, {"loss": ce}

    make = plain if name == "plain" else _cases(keras)[name]

    def fit(strategy):
        with strategy.scope():
            model, x, y, kwargs = make()
            model.compile(optimizer=keras.optimizers.SGD(0.1), **kwargs)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return [np.array(w) for w in model.trainable_weights]

    from keras_transfer.distribution import check_tf_distribute

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"check_error": None, "fit_error": None}
    with mirrored.scope():
        try:
            check_tf_distribute(make()[0])
        except ValueError as e:
            result["check_error"] = str(e)
    try:
        one = fit(tf.distribute.OneDeviceStrategy("/cpu:0"))
        two = fit(mirrored)
    except ValueError as e:
        result["fit_error"] = str(e)
        return result
    result["max_abs_diff"] = max(
        float(np.abs(a - b).max()) for a, b in zip(one, two)
    )
    return result


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        result = mirrored(sys.argv[2])
    else:  # several runs share one process start
        result = {name: globals()[name]() for name in sys.argv[1:]}
    print("RESULT " + json.dumps(result))
