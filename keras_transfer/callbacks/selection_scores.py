"""Label-free model-selection scores of the model after each epoch."""

import keras

from keras_transfer._validation import check_int
from keras_transfer._validation import check_positive
from keras_transfer.strategies import model_selection

_SCORES = ("snd", "dev", "reverse_validation", "source_val_accuracy")
_HIGHER_IS_BETTER = {
    "snd": True, "dev": False, "reverse_validation": True,
    "source_val_accuracy": True,
}


@keras.saving.register_keras_serializable(package="keras_transfer")
class SelectionScores(keras.callbacks.Callback):
    """Scores the model at the end of each epoch without target labels.

    Each epoch's model is a candidate for label-free model selection
    (which epoch to keep, or which run): this callback computes, with the
    same functions and data handling as `strategies.select_model`,

    - `"snd"` (higher is better): `soft_neighborhood_density` of the
      model's predictions on `target` (Saito et al., 2021);
    - `"dev"` (lower is better): `dev_risk` of the per-sample
      cross-entropy on `source_validation`, weighted by
      `importance_weights` from a domain classifier on the model's
      features of `source` vs `target` (You et al., 2019);
    - `"reverse_validation"` (higher is better):
      `reverse_validation_accuracy` of the model's features and target
      pseudo-labels, scored on `source_validation` (Ganin et al., 2016);
    - `"source_val_accuracy"` (higher is better): accuracy on
      `source_validation`.

    Each score is added to the epoch logs under `prefix + name` (a name
    the logs already hold raises a `ValueError`: pass a `prefix`; so
    `keras.callbacks.History`, `CSVLogger`, `TensorBoard`, `ModelCheckpoint`
    and `EarlyStopping` placed *after* this callback see it, e.g.
    `ModelCheckpoint(path, monitor="snd", mode="max", save_best_only=True)`)
    and appended to `self.history[prefix + name]`, one float per epoch.
    With `frequency > 1`, only every `frequency`-th epoch and the last are
    scored, the others log nothing, so (as with `fit(validation_freq=...)`)
    `History`'s list of a score is shorter than the loss's: `self.epochs`
    holds the (0-based) epoch of each entry.

    Features are `features(model)` (a callable returning a Keras model, or
    one fixed Keras model) or the model's `feature_extractor` (the
    package's domain models have one); only `"dev"` and
    `"reverse_validation"` need them.

    Cost per scored epoch: `predict` on `target`, `source_validation` and
    (for `"dev"`) `source`, plus a Newton-fitted logistic regression and a
    ridge classifier on the features (NumPy). Keep the arrays small (about
    1,000 samples each); SND is quadratic in `len(target)`.

    Args:
        target: unlabelled target inputs `(n, ...)`, `n >= 3`; never labels.
        source_validation: `(x, y)` labelled source data not used to train,
            integer labels. Needed by `"dev"`, `"reverse_validation"`
            and `"source_val_accuracy"`.
        source: source training inputs for `"dev"`'s domain classifier.
        scores: a list of names from `"snd"`, `"dev"`,
            `"reverse_validation"`, `"source_val_accuracy"`.
        features: see above.
        from_logits: whether the model outputs logits.
        temperature: float > 0, the SND temperature (0.05 in the paper).
        batch_size: int > 0, for `predict`.
        frequency: int > 0, score every `frequency` epochs (and the last).
        prefix: string put before each log name.

    Raises:
        ValueError: an unknown score, the data a score needs missing,
            labels passed as `target`; at the start of `fit`, a score that
            needs features on a model without `feature_extractor` and no
            `features`.

    Example:

    ```python
    scores = keras_transfer.callbacks.SelectionScores(
        target=x_target[:1000], source_validation=(x_val, y_val),
        source=x_source[:1000], scores=["snd", "dev", "reverse_validation"])
    history = model.fit(data, epochs=15, callbacks=[scores])
    best_epoch = int(np.argmin(history.history["dev"]))
    ```

    Reference:
        [Saito et al., 2021](https://arxiv.org/abs/2108.10860),
        [You et al., 2019](https://proceedings.mlr.press/v97/you19a.html),
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html).
    """

    def __init__(
        self,
        target,
        source_validation=None,
        source=None,
        scores=("snd",),
        features=None,
        from_logits=True,
        temperature=0.05,
        batch_size=256,
        frequency=1,
        prefix="",
    ):
        super().__init__()
        if isinstance(scores, str):
            scores = (scores,)
        scores = tuple(scores)
        bad = [s for s in scores if s not in _SCORES]
        if bad or not scores:
            raise ValueError(
                f"`scores` must be a non-empty list of names from {_SCORES}. "
                f"Received: scores={scores!r}"
            )
        self.validation = model_selection._check_selection_data(
            scores, target, source_validation, source, argument="scores"
        )
        if not isinstance(from_logits, bool):
            raise ValueError(
                "`from_logits` must be True or False. "
                f"Received: from_logits={from_logits!r}"
            )
        if not isinstance(prefix, str):
            raise ValueError(
                f"`prefix` must be a string. Received: prefix={prefix!r}"
            )
        self.target = target
        self.source = source
        self.scores = scores
        self.features = features
        self.from_logits = from_logits
        self.temperature = check_positive(temperature, "temperature")
        self.batch_size = check_int(batch_size, "batch_size")
        self.frequency = check_int(frequency, "frequency")
        self.prefix = prefix
        self.history = {prefix + s: [] for s in scores}
        self.epochs = []
        self._last_epoch = None

    @property
    def higher_is_better(self):
        """`{log name: bool}`: whether a higher value of each score is better."""
        return {self.prefix + s: _HIGHER_IS_BETTER[s] for s in self.scores}

    def on_train_begin(self, logs=None):
        if any(s in ("dev", "reverse_validation") for s in self.scores):
            model_selection._features_of(self.model, self.features)
        self._last_epoch = self.params.get("epochs") if self.params else None

    def on_epoch_end(self, epoch, logs=None):
        last = self._last_epoch is not None and epoch + 1 == self._last_epoch
        if (epoch + 1) % self.frequency and not last:
            return
        clash = [self.prefix + n for n in self.scores if self.prefix + n in (logs or {})]
        if clash:
            raise ValueError(
                f"`SelectionScores` would overwrite the logs {clash}, which "
                "the model or an earlier callback already writes. Pass a "
                "`prefix`, e.g. `prefix='selection_'`."
            )
        values = model_selection._score_model(
            self.model, self.scores, self.target, self.validation,
            self.source, self.features, self.from_logits, self.temperature,
            self.batch_size,
        )
        self.epochs.append(epoch)
        for name in self.scores:
            self.history[self.prefix + name].append(values[name])
            if logs is not None:
                logs[self.prefix + name] = values[name]

    def get_config(self):
        raise NotImplementedError(
            "`SelectionScores` holds its data arrays (`target`, "
            "`source_validation`, `source`), which are no config: build a "
            "new one with the data instead of serializing it."
        )
