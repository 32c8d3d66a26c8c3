import os

import numpy as np
from absl.testing import parameterized
from PIL import Image

from keras_transfer import datasets
from tests.testing import TestCase


def _write_folder(root, classes, per_class=5, size=(12, 10)):
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    return root


class LoadImageFolderTest(TestCase):
    def test_arrays_labels_and_split(self):
        root = _write_folder(self.get_temp_dir(), ["dog", "cat"], per_class=5)
        # Grey JPEG in "cat": converted to RGB; a text file is skipped.
        Image.new("L", (30, 20), color=200).save(os.path.join(root, "cat", "grey.JPG"))
        with open(os.path.join(root, "cat", "notes.txt"), "w") as f:
            f.write("not an image")
        (x, y), (x_test, y_test), names = datasets.load_image_folder(
            root, image_size=(12, 10), test_fraction=0.25, seed=0
        )
        self.assertEqual(names, ("cat", "dog"))
        self.assertEqual(len(x) + len(x_test), 11)
        self.assertEqual((x.shape[1:], x.dtype, y.dtype), ((12, 10, 3), np.uint8, np.int64))
        # Stratified, 3 test images: cat 6 * 3 / 11 = 1.64 and dog 1.36 give
        # 1 each, the largest remainder (cat) gets the third.
        self.assertEqual(np.bincount(y_test, minlength=2).tolist(), [2, 1])
        # PNGs at the target size are not resampled: pixels are exact.
        expected = np.asarray(Image.open(os.path.join(root, "dog", "0.png")))
        all_x = np.concatenate([x, x_test])
        self.assertTrue(any(np.array_equal(img, expected) for img in all_x))
        grey = [img for img in all_x if (img == 200).all()]
        self.assertEqual(len(grey), 1)
        # Same seed, same split; no test set with test_fraction=0.
        (x2, _), _, _ = datasets.load_image_folder(root, (12, 10), 0.25, seed=0)
        np.testing.assert_array_equal(x, x2)
        _, (x_none, _), _ = datasets.load_image_folder(root, (4, 4), test_fraction=0)
        self.assertEqual(x_none.shape, (0, 4, 4, 3))

    def test_missing_folder_raises(self):
        with self.assertRaisesRegex(
            FileNotFoundError, r"`load_image_folder`.*Received: path='/no/images'"
        ):
            datasets.load_image_folder("/no/images")

    def test_one_class_raises(self):
        root = _write_folder(self.get_temp_dir(), ["only"], per_class=2)
        with self.assertRaisesRegex(
            ValueError, r"at least two class sub-folders.*\['only'\]"
        ):
            datasets.load_image_folder(root)

    def test_empty_class_raises(self):
        root = _write_folder(self.get_temp_dir(), ["a", "b"], per_class=2)
        os.makedirs(os.path.join(root, "c"))
        with self.assertRaisesRegex(ValueError, "sub-folder 'c' with no images"):
            datasets.load_image_folder(root)

    def test_undecodable_image_is_named(self):
        root = _write_folder(self.get_temp_dir(), ["a", "b"], per_class=2)
        with open(os.path.join(root, "b", "broken.jpg"), "wb") as f:
            f.write(b"\xff\xd8 not really a jpeg")
        with self.assertRaisesRegex(ValueError, r"cannot decode the image .*broken\.jpg"):
            datasets.load_image_folder(root)

    @parameterized.named_parameters(
        ("size", {"image_size": (224,)}, r"image_size=\(224,\)"),
        ("fraction", {"test_fraction": 1}, "test_fraction=1"),
    )
    def test_invalid_arguments_raise(self, kwargs, received):
        root = _write_folder(self.get_temp_dir(), ["a", "b"], per_class=1)
        with self.assertRaisesRegex(ValueError, "Received: " + received):
            datasets.load_image_folder(root, **kwargs)
