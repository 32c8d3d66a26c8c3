"""Per-group learning rates (head first, then groups top -> down)."""

import keras


@keras.saving.register_keras_serializable(package="keras_transfer")
class DiscriminativeLR(keras.callbacks.Callback):
    """Gives each layer group its own learning rate.

    Args:
        groups: output of `layer_groups(base, ...)`, input -> output order.
        learning_rates: list of rates, head first, then groups top -> down.
        base_rate: rate of the head when `learning_rates` is None; group k
            from the top gets `base_rate * factor**k`.
        factor: float in (0, 1], ratio between neighbouring groups.
        log_dir: optional TensorBoard log directory.
    """

    def __init__(
        self,
        groups,
        learning_rates=None,
        base_rate=None,
        factor=0.1,
        log_dir=None,
    ):
        super().__init__()
        self.groups = groups
        self.learning_rates = learning_rates
        self.base_rate = base_rate
        self.factor = factor
        self.log_dir = log_dir

    def get_config(self):
        raise NotImplementedError("Being implemented.")
