import keras
import keras_hub
from absl.testing import parameterized

from keras_transfer.backbones import efficientnet_lite0
from keras_transfer.strategies import layer_groups
from tests.testing import TestCase


def _names(groups):
    return [[layer.name for layer in group] for group in groups]


def _sequential():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, name="d0"),
            keras.layers.BatchNormalization(name="bn0"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dense(8, name="d1"),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.Dense(8, name="d2"),
            keras.layers.Dense(4, name="d3"),
        ],
        name="base",
    )


def _tiny_bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=20,
        num_layers=3,
        num_heads=2,
        hidden_dim=4,
        intermediate_dim=8,
        max_sequence_length=8,
    )


class LayerGroupsTest(TestCase, parameterized.TestCase):
    def test_num_groups_splits_weight_bearing_layers_in_order(self):
        groups = layer_groups(_sequential(), num_groups=2)
        # ReLU and Dropout hold no weights: freezing them changes nothing.
        self.assertEqual(_names(groups), [["d0", "bn0"], ["d1", "d2", "d3"]])
        self.assertEqual(
            _names(layer_groups(_sequential(), num_groups=5)),
            [["d0"], ["bn0"], ["d1"], ["d2"], ["d3"]],
        )

    def test_frozen_model_groups_like_trainable_one(self):
        base = _sequential()
        base.trainable = False
        self.assertEqual(
            _names(layer_groups(base, num_groups=2)),
            [["d0", "bn0"], ["d1", "d2", "d3"]],
        )

    def test_names_and_prefixes(self):
        groups = layer_groups(_sequential(), names=[["d0", "bn"], ["d1", "d2"], "d3"])
        self.assertEqual(_names(groups), [["d0", "bn0"], ["d1", "d2"], ["d3"]])

    def test_functional_with_nested_model_is_flattened(self):
        base = _sequential()
        inputs = keras.Input((6,))
        outputs = keras.layers.Dense(3, name="head")(base(inputs))
        model = keras.Model(inputs, outputs)
        self.assertEqual(
            _names(layer_groups(model, num_groups=3)),
            [["d0", "bn0"], ["d1", "d2"], ["d3", "head"]],
        )

    def test_bert_blocks_are_transformer_layers(self):
        groups = layer_groups(_tiny_bert(), blocks="auto")
        self.assertEqual(
            _names(groups),
            [
                [
                    "token_embedding",
                    "position_embedding",
                    "segment_embedding",
                    "embeddings_layer_norm",
                ],
                ["transformer_layer_0"],
                ["transformer_layer_1"],
                ["transformer_layer_2"],
                ["pooled_dense"],
            ],
        )
        merged = layer_groups(_tiny_bert(), blocks="auto", num_groups=2)
        self.assertEqual(
            _names(merged)[1], ["transformer_layer_1", "transformer_layer_2", "pooled_dense"]
        )

    def test_efficientnet_lite0_blocks_are_stages(self):
        base = efficientnet_lite0(weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3))
        groups = layer_groups(base, blocks="auto")
        firsts = [group[0].name for group in groups]
        self.assertEqual(
            firsts,
            ["stem_conv"]
            + [
                "block1a_dwconv",
                "block2a_expand_conv",
                "block3a_expand_conv",
                "block4a_expand_conv",
                "block5a_expand_conv",
                "block6a_expand_conv",
                "block7a_expand_conv",
            ]
            + ["top_conv"],
        )
        # Stage sizes: (conv, bn) pairs per sub-block, Lite0 repeats 1,2,2,3,3,4,1.
        sizes = [len(group) for group in groups]
        self.assertEqual(sizes, [2, 4, 12, 12, 18, 18, 24, 6, 2])
        self.assertTrue(all(g.name.startswith("block6") for g in groups[6]))
        # Every weight-bearing layer in exactly one group.
        grouped = [layer for group in groups for layer in group]
        weighted = [l for l in base.layers if l.weights]
        self.assertEqual(len(grouped), len(set(map(id, grouped))))
        self.assertEqual({id(l) for l in grouped}, {id(l) for l in weighted})
        three = layer_groups(base, blocks="auto", num_groups=3)
        self.assertEqual([g[0].name for g in three], ["stem_conv", "block3a_expand_conv", "block6a_expand_conv"])

    @parameterized.named_parameters(
        ("nothing", {}, "Pass one of"),
        ("zero_groups", {"num_groups": 0}, "num_groups=0"),
        ("too_many", {"num_groups": 6}, "at most 5"),
        ("bool_groups", {"num_groups": True}, "num_groups=True"),
        ("bad_blocks", {"blocks": "stages"}, "blocks='stages'"),
        ("no_blocks", {"blocks": "auto"}, "found no blocks"),
        ("both", {"names": [["d0"]], "num_groups": 2}, "Pass `names` alone"),
        ("unknown_name", {"names": [["d0", "bn0", "d1"], ["conv"], ["d2", "d3"]]}, "no layer named or starting with 'conv'"),
        ("overlap", {"names": [["d0", "bn0", "d1"], ["d1", "d2", "d3"]]}, "must not overlap"),
        ("left_out", {"names": [["d0", "bn0"], ["d3"]]}, r"\['d1', 'd2'\].*in no group"),
        ("empty_group", {"names": [["d0", "bn0", "d1", "d2", "d3"], []]}, "non-empty list"),
        ("weightless_group", {"names": [["d0", "bn0", "d1", "d2", "d3"], ["relu"]]}, "no weight-bearing layer"),
        ("reversed", {"names": [["d2", "d3"], ["d0", "bn0", "d1"]]}, "ordered from the input"),
        ("string_names", {"names": "d0"}, "names='d0'"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            layer_groups(_sequential(), **kwargs)

    def test_not_a_model_raises(self):
        with self.assertRaisesRegex(ValueError, "Received: model="):
            layer_groups(keras.layers.Dense(3), num_groups=1)
