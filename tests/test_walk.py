import keras
import numpy as np

from keras_transfer import _walk
from keras_transfer.strategies import InferenceMode
from tests.testing import TestCase


class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3, name="inner_dense")
        self.parts = [keras.layers.Dense(3, name="part0")]

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.parts[0].build(input_shape[:-1] + (3,))

    def call(self, x):
        return self.parts[0](self.dense(x))


def _model():
    inner = keras.Sequential(
        [keras.Input((4,)), Block(name="block"), keras.layers.Dense(3, name="s")],
        name="inner",
    )
    inputs = keras.Input((4,))
    h = InferenceMode(inner, name="wrap")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="top")(h), name="outer")


class WalkTest(TestCase):
    def test_paths_and_structural_keys(self):
        sites = {s.path: s.key for s in _walk.walk(_model())}
        self.assertEqual(sites["wrap/inner/block/inner_dense"], "layers[1]/layer/layers[0]/dense")
        self.assertEqual(sites["wrap/inner/block/part0"], "layers[1]/layer/layers[0]/parts[0]")
        self.assertEqual(sites["top"], "layers[2]")
        # A second copy has other auto names only where names are automatic.
        keys = [s.key for s in _walk.walk(_model())]
        self.assertEqual(keys, list(sites.values()))

    def test_descend_stops_below(self):
        paths = [s.path for s in _walk.walk(_model(), descend=lambda l: l.name != "block")]
        self.assertIn("wrap/inner/block", paths)
        self.assertNotIn("wrap/inner/block/inner_dense", paths)

    def test_rebuild_at_any_depth(self):
        model = _model()
        x = np.ones((2, 4), "float32")
        expected = keras.ops.convert_to_numpy(model(x))
        sites = {s.path: s for s in _walk.walk(model)}
        old_attr = sites["wrap/inner/block/inner_dense"].layer
        old_node = sites["wrap/inner/s"].layer
        new_attr = keras.layers.Dense.from_config(old_attr.get_config())
        new_attr.build((None, 4))
        new_attr.set_weights(old_attr.get_weights())
        new_node = keras.layers.Dense.from_config(old_node.get_config())
        new_node.build((None, 3))
        new_node.set_weights([w * 2 for w in old_node.get_weights()])
        result = _walk.rebuild(model, {id(old_attr): new_attr, id(old_node): new_node})
        # The attribute changed in place; the Sequential holding the node was
        # rebuilt, and `InferenceMode` (an attribute) took it: same outer model.
        self.assertIs(result, model)
        self.assertIs(model.get_layer("wrap").layer.layers[0].dense, new_attr)
        self.assertIs(model.get_layer("wrap").layer.layers[1], new_node)
        inner = model.get_layer("wrap").layer
        h = keras.ops.convert_to_numpy(inner.layers[0](x))
        h = h @ (2 * keras.ops.convert_to_numpy(old_node.kernel)) + 2 * keras.ops.convert_to_numpy(old_node.bias)
        top = model.get_layer("top")
        want = h @ keras.ops.convert_to_numpy(top.kernel) + keras.ops.convert_to_numpy(top.bias)
        self.assertAllClose(model(x), want, atol=1e-5)
        self.assertNotAllClose(model(x), expected)

    def test_graph_units_flatten_nested_graph_models_only(self):
        names = [u.name for u in _walk.graph_units(_model())]
        self.assertEqual(names[1:], ["wrap", "top"])
