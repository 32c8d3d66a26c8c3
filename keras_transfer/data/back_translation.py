"""Back-translation through any translator, translating each text once."""

import keras


@keras.saving.register_keras_serializable(package="keras_transfer")
class BackTranslation:
    """Caches a pluggable translator so each distinct text is translated once.

    `translator` is any callable from a list of strings to a list of strings
    of the same length, for example a function that translates English to
    French and back with a seq2seq model, or a call to a translation service.
    Only texts not seen before are sent to it, in batches of `batch_size`.

    Args:
        translator: callable `list[str] -> list[str]`.
        batch_size: how many texts per translator call.

    Example:

    >>> import keras_transfer
    >>> calls = []
    >>> def shout(texts):
    ...     calls.append(len(texts))
    ...     return [t.upper() for t in texts]
    >>> bt = keras_transfer.data.BackTranslation(shout)
    >>> bt(["a b", "c", "a b"])
    ['A B', 'C', 'A B']
    >>> bt(["c", "d"]), calls
    (['C', 'D'], [2, 1])
    """

    def __init__(self, translator, batch_size=64):
        if not callable(translator):
            raise ValueError(
                "`translator` must be a callable from a list of strings to a "
                f"list of strings. Received: translator={translator!r}"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(
                f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
            )
        self.translator = translator
        self.batch_size = batch_size
        self.cache = {}

    def __call__(self, texts):
        from keras_transfer.data.text import _check_texts

        texts = _check_texts(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            result = self.translator(list(chunk))
            if isinstance(result, str) or not hasattr(result, "__len__"):
                raise ValueError(
                    "`translator` must return a list of strings. Received: "
                    f"translator(...) -> {type(result).__name__}"
                )
            result = list(result)
            if len(result) != len(chunk):
                raise ValueError(
                    "`translator` must return one string per input text. It was "
                    f"given {len(chunk)} texts. Received: {len(result)} strings "
                    f"(first input: {chunk[0]!r})"
                )
            for i, (source, target) in enumerate(zip(chunk, result)):
                if not isinstance(target, str) or not target.strip():
                    raise ValueError(
                        "`translator` must return non-empty strings. For input "
                        f"{source!r}, Received: {target!r}"
                    )
            self.cache.update(zip(chunk, result))
        return [self.cache[t] for t in texts]

    def get_config(self):
        try:
            translator = keras.saving.serialize_keras_object(self.translator)
        except TypeError as e:
            raise ValueError(
                "`BackTranslation.get_config()` needs a serializable "
                "`translator`: a function or class registered with "
                "`keras.saving.register_keras_serializable`. Received: "
                f"translator={self.translator!r}"
            ) from e
        return {"translator": translator, "batch_size": self.batch_size}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["translator"] = keras.saving.deserialize_keras_object(
            config["translator"]
        )
        return cls(**config)
