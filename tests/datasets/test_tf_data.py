import numpy as np
from absl.testing import parameterized

from keras_transfer import datasets
from tests.testing import TestCase


class ToDatasetTest(TestCase):
    def test_batches_in_order(self):
        x = np.arange(10, dtype="float32").reshape(5, 2)
        ds = datasets.to_dataset(x, np.arange(5), batch_size=2)
        batches = [(bx.numpy(), by.numpy()) for bx, by in ds]
        self.assertEqual([len(by) for _, by in batches], [2, 2, 1])
        self.assertAllClose(np.concatenate([bx for bx, _ in batches]), x)
        self.assertEqual(batches[0][1].tolist(), [0, 1])

    def test_shuffle_is_seeded_and_keeps_pairs(self):
        x = np.arange(20)
        def epoch(seed):
            ds = datasets.to_dataset(x, x * 10, batch_size=20, shuffle=True, seed=seed)
            bx, by = next(iter(ds))
            self.assertAllClose(by.numpy(), bx.numpy() * 10)
            return bx.numpy()
        self.assertAllClose(epoch(1), epoch(1))
        self.assertFalse(np.array_equal(epoch(1), np.arange(20)))
        self.assertFalse(np.array_equal(epoch(1), epoch(2)))

    def test_texts_and_x_only(self):
        (x, y), _ = datasets.load_rotten_tomatoes(n_train=4, n_test=2)
        bx, by = next(iter(datasets.to_dataset(x, y, batch_size=4)))
        self.assertEqual(bx.dtype.name, "string")
        self.assertEqual(bx.numpy()[0].decode(), x[0])
        only = next(iter(datasets.to_dataset(np.ones((3, 2)))))
        self.assertEqual(tuple(only.shape), (3, 2))

    @parameterized.named_parameters(
        ("batch", {"batch_size": 0}, "batch_size=0"),
        ("seed", {"seed": "a"}, "seed='a'"),
        ("length", {"y": np.zeros(3)}, "len\\(x\\)=4, len\\(y\\)=3"),
    )
    def test_invalid_arguments_raise(self, kwargs, received):
        with self.assertRaisesRegex(ValueError, "Received: " + received):
            datasets.to_dataset(np.zeros((4, 2)), **kwargs)

    def test_ragged_waveforms_raise(self):
        with self.assertRaisesRegex(ValueError, "pad them first"):
            datasets.to_dataset([np.zeros(3), np.zeros(4)])
