"""DoRA through the PEFT API: `apply_lora(use_dora=True)` reaches the layers,
and the learned magnitudes travel with `save_peft_weights` and whole-model
saves (before the fix the option did not exist on `apply_lora`, and the
magnitudes were left out of the PEFT weight file)."""

import os

import keras
import numpy as np

from keras_transfer.layers import LoRADense
from keras_transfer.strategies import apply_lora
from keras_transfer.strategies import load_peft_weights
from keras_transfer.strategies import save_peft_weights
from tests.testing import TestCase


def _model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", name="d1")(inputs)
    outputs = keras.layers.Dense(3, name="d2")(x)
    return keras.Model(inputs, outputs)


def _dora(seed=0):
    model, changed = apply_lora(_model(seed), lora_rank=2, use_dora=True)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model, changed


class PeftDoRATest(TestCase):
    def test_apply_lora_passes_use_dora_and_saves_magnitudes(self):
        model, changed = _dora()
        self.assertEqual(sorted(changed), ["d1", "d2"])
        for name in changed:
            layer = model.get_layer(name)
            self.assertIsInstance(layer, LoRADense)
            self.assertTrue(layer.use_dora)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 6)).astype("float32")
        y = rng.normal(size=(32, 3)).astype("float32")
        magnitude = model.get_layer("d1").lora_magnitude
        before = keras.ops.convert_to_numpy(magnitude).copy()
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        after = keras.ops.convert_to_numpy(magnitude)
        self.assertGreater(np.max(np.abs(after - before)), 1e-4)
        expected = model.predict(x, verbose=0)

        path = os.path.join(self.get_temp_dir(), "dora.npz")
        save_peft_weights(model, path)
        fresh, _ = _dora()
        load_peft_weights(fresh, path)
        self.assertAllClose(
            fresh.get_layer("d1").lora_magnitude, after, atol=0, rtol=0
        )
        self.assertAllClose(fresh.predict(x, verbose=0), expected, atol=1e-6)

        whole = os.path.join(self.get_temp_dir(), "dora.keras")
        model.save(whole)
        loaded = keras.models.load_model(whole)
        self.assertTrue(loaded.get_layer("d2").use_dora)
        self.assertAllClose(loaded.predict(x, verbose=0), expected, atol=1e-6)
