import os
import struct
import zlib

import numpy as np
from absl.testing import parameterized
from PIL import Image

from keras_transfer import datasets
from keras_transfer.datasets.image_folder import to_rgb8
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


def _write_png16(path, array, color_type):
    """A 16-bit PNG written by hand, without Pillow: grey (color type 0),
    RGB (2), grey+alpha (4) or RGBA (6), big-endian samples (PNG spec 11.2.2)."""
    array = np.asarray(array, dtype=">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in array)

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    height, width = array.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
        )


def _over_white(rgb, alpha):
    # Reference compositing, computed here in integers: c a / 255 + 255 (1 - a / 255).
    rgb = np.asarray(rgb, dtype=np.int64)
    alpha = np.asarray(alpha, dtype=np.int64)[..., None]
    return np.floor((rgb * alpha + 255 * (255 - alpha)) / 255 + 0.5).astype(np.uint8)


def _grey3(values):
    return np.repeat(np.asarray(values, dtype=np.uint8)[..., None], 3, axis=-1)


class ToRGB8Test(TestCase):
    """Every mode and bit depth Pillow reads, against a reference conversion."""

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)
        self.dir = self.get_temp_dir()

    def _read(self, name):
        with Image.open(os.path.join(self.dir, name)) as image:
            return to_rgb8(image)

    def test_sixteen_bit_grey_png_is_divided_by_257_not_clipped(self):
        values = self.rng.integers(0, 65536, size=(6, 7))
        values[0, :4] = [0, 128, 129, 65535]
        _write_png16(os.path.join(self.dir, "g16.png"), values, color_type=0)
        expected = _grey3(np.floor(values / 257 + 0.5))
        np.testing.assert_array_equal(self._read("g16.png"), expected)
        # Pillow's own conversion (what the loader did before) clips to white.
        with Image.open(os.path.join(self.dir, "g16.png")) as image:
            self.assertEqual(image.mode, "I;16")
            clipped = np.asarray(image.convert("RGB"))
        self.assertGreater(np.mean(clipped == 255), 0.9)

    def test_sixteen_bit_colour_pngs_within_one_level(self):
        for color_type, channels in ((2, 3), (4, 2), (6, 4)):
            values = self.rng.integers(0, 65536, size=(5, 4, channels))
            name = f"c{color_type}.png"
            _write_png16(os.path.join(self.dir, name), values, color_type)
            eight = values / 257
            if channels == 3:
                expected = eight
            else:
                colour = eight[..., :1] if channels == 2 else eight[..., :3]
                colour = np.broadcast_to(colour, (5, 4, 3))
                alpha = eight[..., -1:]
                expected = (colour * alpha + 255 * (255 - alpha)) / 255
            got = self._read(name).astype(np.float64)
            # Pillow keeps the high byte of 16-bit colour: within 1 of v / 257
            # (+1 more after compositing).
            self.assertLessEqual(np.abs(got - expected).max(), 1.5, name)

    def test_eight_bit_modes(self):
        grey = self.rng.integers(0, 256, size=(4, 5), dtype=np.uint8)
        rgb = self.rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        alpha = self.rng.integers(0, 256, size=(4, 5), dtype=np.uint8)
        alpha[0, :2] = [0, 255]
        bits = self.rng.integers(0, 2, size=(4, 5)).astype(bool)
        Image.fromarray(bits).save(os.path.join(self.dir, "one.png"))
        Image.fromarray(grey).save(os.path.join(self.dir, "grey.png"))
        Image.fromarray(rgb).save(os.path.join(self.dir, "rgb.png"))
        Image.fromarray(np.dstack([grey, alpha])).save(os.path.join(self.dir, "la.png"))
        Image.fromarray(np.dstack([rgb, alpha])).save(os.path.join(self.dir, "rgba.png"))
        with Image.open(os.path.join(self.dir, "one.png")) as image:
            self.assertEqual(image.mode, "1")
        np.testing.assert_array_equal(self._read("one.png"), _grey3(bits * 255))
        np.testing.assert_array_equal(self._read("grey.png"), _grey3(grey))
        np.testing.assert_array_equal(self._read("rgb.png"), rgb)
        np.testing.assert_array_equal(
            self._read("la.png"), _over_white(_grey3(grey), alpha)
        )
        np.testing.assert_array_equal(self._read("rgba.png"), _over_white(rgb, alpha))

    def test_palette_with_transparency_png_and_gif(self):
        index = self.rng.integers(0, 4, size=(6, 6)).astype(np.uint8)
        palette = [[250, 0, 0], [0, 0, 0], [0, 0, 250], [10, 200, 30]]
        for name in ("p.png", "p.gif"):
            image = Image.fromarray(index, mode="L").convert("P")
            image.putpalette(sum(palette, []))
            image.putdata(index.ravel().tolist())  # `convert` may remap indices
            image.save(os.path.join(self.dir, name), transparency=1)
            expected = np.asarray(palette, dtype=np.uint8)[index]
            expected[index == 1] = 255  # the transparent (black) colour shows white
            with Image.open(os.path.join(self.dir, name)) as opened:
                self.assertEqual(opened.mode, "P")
            np.testing.assert_array_equal(self._read(name), expected, err_msg=name)

    def test_cmyk_tiff(self):
        cmyk = self.rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
        Image.fromarray(cmyk, mode="CMYK").save(os.path.join(self.dir, "cmyk.tif"))
        c = cmyk.astype(np.float64)
        expected = 255 * (1 - c[..., :3] / 255) * (1 - c[..., 3:] / 255)
        got = self._read("cmyk.tif").astype(np.float64)
        self.assertLessEqual(np.abs(got - expected).max(), 1.0)

    def test_float_and_wide_integer_tiffs(self):
        values = self.rng.uniform(0, 1, size=(3, 4)).astype(np.float32)
        Image.fromarray(values, mode="F").save(os.path.join(self.dir, "f.tif"))
        np.testing.assert_array_equal(
            self._read("f.tif"), _grey3(np.floor(values.astype(np.float64) * 255 + 0.5))
        )
        Image.fromarray(values * 300, mode="F").save(os.path.join(self.dir, "f300.tif"))
        with self.assertRaisesRegex(ValueError, r"must be in \[0, 1\].*\[.*, 2\d\d\."):
            self._read("f300.tif")
        wide = self.rng.integers(0, 70000, size=(3, 4)).astype(np.int32)
        Image.fromarray(wide, mode="I").save(os.path.join(self.dir, "i32.tif"))
        with self.assertRaisesRegex(ValueError, r"32-bit integer pixels \(mode 'I'"):
            self._read("i32.tif")

    def test_exif_orientation_is_applied(self):
        rgb = self.rng.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display"
        Image.fromarray(rgb).save(os.path.join(self.dir, "turned.png"), exif=exif)
        np.testing.assert_array_equal(self._read("turned.png"), np.rot90(rgb, k=-1))

    def test_loader_reads_mixed_modes_with_their_labels(self):
        # Regression: a 16-bit PNG was read as all-white and trained silently.
        root = self.get_temp_dir()
        for name in ("a", "b"):
            os.makedirs(os.path.join(root, name))
        dark = np.full((4, 4), 257 * 40)
        _write_png16(os.path.join(root, "a", "dark16.png"), dark, color_type=0)
        Image.fromarray(np.full((4, 4), 40, np.uint8)).save(os.path.join(root, "a", "l.jpg"))
        Image.fromarray(np.full((4, 4, 4), [40, 40, 40, 255], np.uint8)).save(
            os.path.join(root, "b", "rgba.png")
        )
        Image.fromarray(np.full((4, 4, 3), 40, np.uint8)).save(os.path.join(root, "b", "rgb.bmp"))
        (x, y), _, names = datasets.load_image_folder(root, (4, 4), test_fraction=0)
        self.assertEqual(names, ("a", "b"))
        np.testing.assert_array_equal(np.sort(y), [0, 0, 1, 1])
        np.testing.assert_array_equal(x, np.full((4, 4, 4, 3), 40, np.uint8))

    def test_unconvertible_image_is_named_by_the_loader(self):
        root = _write_folder(self.get_temp_dir(), ["a", "b"], per_class=1)
        Image.fromarray(np.full((3, 3), 7.5, np.float32), mode="F").save(
            os.path.join(root, "b", "hdr.tif")
        )
        with self.assertRaisesRegex(ValueError, r"hdr\.tif.*must be in \[0, 1\]"):
            datasets.load_image_folder(root, (3, 3))
