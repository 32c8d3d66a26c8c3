"""The loaders on real files from Debian data packages no other test uses.

Open Clip Art PNGs (`openclipart-png`), Tux Paint stamps
(`tuxpaint-stamps-default`) and fortune cookies (`fortunes`), installed by
`bash scripts/setup.sh --dev`. Accuracy on them, against scikit-learn, is in
`benchmarks/outside_data.md`.
"""

import csv
import io
import os

import numpy as np
from PIL import Image

from keras_transfer import datasets
from keras_transfer.datasets.image_folder import to_rgb8
from tests.testing import TestCase
from tests.testing import require_data

CLASSES = ("animals", "food", "transportation")


def _first_pngs(folder, n):
    found = []
    for dirpath, _, files in sorted(os.walk(folder)):
        found += [os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".png")]
    # Small files only: quick to decode on a shared machine.
    return [f for f in found if os.path.getsize(f) < 60_000][:n]


class OutsideDataTest(TestCase):
    def test_clip_art_in_mixed_modes(self):
        require_data("openclipart")
        root = self.get_temp_dir()
        for label in CLASSES:
            os.makedirs(os.path.join(root, label))
            for i, path in enumerate(_first_pngs(f"/usr/share/openclipart/png/{label}", 3)):
                with Image.open(path) as image:
                    grey = Image.fromarray(to_rgb8(image)).convert("L")
                # The same picture as 8-bit and as 16-bit greyscale, and a JPEG.
                grey.save(os.path.join(root, label, f"{i}_l.png"))
                Image.fromarray(np.asarray(grey, np.uint16) * 257).save(
                    os.path.join(root, label, f"{i}_i16.png")
                )
                grey.convert("RGB").save(os.path.join(root, label, f"{i}_j.jpg"))
        (x, y), _, names = datasets.load_image_folder(root, (48, 48), test_fraction=0)
        self.assertEqual(names, CLASSES)
        self.assertEqual(np.bincount(y).tolist(), [9, 9, 9])
        # The 16-bit copy loads exactly as the 8-bit one (it was all-white before).
        for label in CLASSES:
            for i in range(3):
                pair = [
                    np.asarray(Image.open(os.path.join(root, label, f"{i}_{k}.png")))
                    for k in ("l", "i16")
                ]
                np.testing.assert_array_equal(pair[0].astype(np.uint16) * 257, pair[1])
        sums = sorted(int(img.astype(np.int64).sum()) for img in x)
        # Each 16-bit/8-bit pair gives two identical images (JPEG is lossy).
        pairs = sum(a == b for a, b in zip(sums, sums[1:]))
        self.assertGreaterEqual(pairs, 9)
        self.assertLess(np.mean(x == 255), 0.99)  # not washed out to white

    def test_tux_paint_stamps_transparency_is_white(self):
        require_data("tuxpaint")
        root = self.get_temp_dir()
        for label, source in (("animals", "animals"), ("food", "food"), ("vehicles", "vehicles")):
            os.makedirs(os.path.join(root, label))
            for i, path in enumerate(_first_pngs(f"/usr/share/tuxpaint/stamps/{source}", 2)):
                os.symlink(path, os.path.join(root, label, f"{i}.png"))
        (x, y), _, names = datasets.load_image_folder(root, (32, 32), test_fraction=0)
        self.assertEqual(len(x), 6)
        # Stamps are RGBA cut-outs: their transparent corners show white.
        for image in x:
            np.testing.assert_array_equal(image[0, 0], [255, 255, 255])

    def test_fortunes_as_a_cp1252_csv(self):
        require_data("fortunes")
        rows = []
        for label in ("linux", "pets", "wisdom"):  # each has an accented entry
            with open(f"/usr/share/games/fortunes/{label}", encoding="utf-8") as f:
                entries = [e.strip("\n") for e in f.read().split("\n%\n") if e.strip()]
            accented = [e for e in entries if any(ord(c) > 127 for c in e)]
            rows += [(e, label) for e in entries[:10] + accented[:1]]
        rows.insert(4, ("", "food"))
        self.assertTrue(any("\n" in t for t, _ in rows))
        buffer = io.StringIO(newline="")
        csv.writer(buffer, lineterminator="\n").writerows([("fortune", "kind")] + rows)
        data = buffer.getvalue().encode("cp1252")
        path = os.path.join(self.get_temp_dir(), "fortunes.csv")
        with open(path, "wb") as f:
            f.write(data)
        # utf-8: the first non-UTF-8 byte, named by line and byte, counted here.
        first = next(i for i, b in enumerate(data) if b > 127)
        line = data.count(b"\n", 0, first) + 1
        column = first - data.rfind(b"\n", 0, first)
        with self.assertRaisesRegex(
            ValueError, rf"cannot decode line {line} .* at byte {column} of the line \(byte {first} "
        ):
            datasets.load_text_csv(path, "fortune", "kind")
        # cp1252: the empty row stops the run at its line, or is skipped with a count.
        empty_line = 2 + sum(t.count("\n") + 1 for t, _ in rows[:4])  # after the header
        with self.assertRaisesRegex(ValueError, rf"an empty 'fortune' on line {empty_line} "):
            datasets.load_text_csv(path, "fortune", "kind", encoding="cp1252")
        with self.assertWarnsRegex(UserWarning, r"skipped 1 bad row"):
            (x, y), _, names = datasets.load_text_csv(
                path, "fortune", "kind", encoding="cp1252", on_bad_lines="warn", test_fraction=0
            )
        self.assertEqual(names, ("linux", "pets", "wisdom"))
        self.assertEqual(sorted(x.tolist()), sorted(t for t, _ in rows if t))
