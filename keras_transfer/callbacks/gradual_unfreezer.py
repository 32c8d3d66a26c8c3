"""Unfreezes layer groups one stage at a time inside one `fit` call."""

import keras


@keras.saving.register_keras_serializable(package="keras_transfer")
class GradualUnfreezer(keras.callbacks.Callback):
    """Stage 0 trains the head, stage k also trains `groups[-k:]`.

    Args:
        groups: output of `layer_groups(base, ...)`, input -> output order.
        epochs_per_stage: int, epochs per stage (ignored with `schedule`).
        schedule: list of epoch indices where stage 1, 2, ... start.
        head: layers of the head; None means every trainable layer of the
            model not in `groups`.
        train_batchnorm: whether BatchNormalization layers train once their
            group is unfrozen.
        log_dir: optional TensorBoard log directory.
    """

    def __init__(
        self,
        groups,
        epochs_per_stage=1,
        schedule=None,
        head=None,
        train_batchnorm=False,
        log_dir=None,
    ):
        super().__init__()
        self.groups = groups
        self.epochs_per_stage = epochs_per_stage
        self.schedule = schedule
        self.head = head
        self.train_batchnorm = train_batchnorm
        self.log_dir = log_dir

    def get_config(self):
        raise NotImplementedError("Being implemented.")
