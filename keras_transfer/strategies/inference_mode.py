import keras


@keras.saving.register_keras_serializable(package="keras_transfer")
class InferenceMode(keras.layers.Layer):
    """Always calls the wrapped layer with `training=False`.

    The Keras transfer-learning guide builds `base(inputs, training=False)`
    to keep a pretrained base in inference mode while the head (or, later,
    the base itself) trains. In Keras 3 functional models that argument is
    overridden: `Model.fit` calls every node with `training=True`, so the
    base's Dropout layers (EfficientNet's stochastic depth, BERT's dropout)
    are active and a "frozen" base returns different features every step.
    (BatchNormalization is unaffected as long as it has `trainable=False`.)
    `InferenceMode(base)` restores the guide's behaviour: its own `call`
    takes no `training` argument and calls `base(inputs, training=False)`,
    so Dropout stays off and BatchNormalization keeps its moving statistics
    even when the base's weights train. Weights, `trainable` and the dtype
    policy are the wrapped layer's.

    Args:
        layer: the Keras layer or model to run in inference mode.
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: whatever `layer` takes (a tensor or a dict of tensors).

    Returns:
        `layer(inputs, training=False)`.

    Example:

    ```python
    inputs = keras.Input((96, 96, 3))
    features = keras_transfer.strategies.InferenceMode(base)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(features)
    model = keras.Model(inputs, outputs)
    ```
    """

    # Its config carries the wrapped layer as it is now: PEFT surgery inside
    # it saves without help (see `keras_transfer._walk`).
    _serializes_sublayers = True

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "`layer` must be a Keras layer or model. "
                f"Received: layer={layer!r}"
            )
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs):
        # The wrapped layer's dtype policy decides the output dtype.
        return self.layer.compute_output_spec(inputs)

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)
