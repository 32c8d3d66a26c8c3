"""Real data the project had not seen, as a user's files: CLI + Python API vs scikit-learn.

Three public data sets that Debian packages ship as files (installed by
`bash scripts/setup.sh --dev`), none used by the rest of the test suite:

- image: Open Clip Art Library PNGs (`openclipart-png`, public domain),
  classes animals / food / transportation. Copied into a class folder in
  MIXED modes, as a user's folder is: the shipped RGBA PNG, greyscale `L`
  PNG, palette PNG with a transparent colour, 16-bit greyscale PNG, JPEG.
- text: fortune cookies (`fortunes`, BSD-style), categories as classes,
  written as a cp1252 CSV with multi-line quoted fields, empty rows and a
  blank line, read with `--encoding cp1252 --on-bad-lines warn`.
- unlabeled adaptation target: Tux Paint stamps (`tuxpaint-stamps-default`,
  GPL), animals / food / vehicles, a different drawing style; the target
  labels are used for scoring only.

Run: `nice python3 benchmarks/outside_data.py [--quick]` from the repository
root; it prints the tables of `benchmarks/outside_data.md`.
"""

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402

from keras_transfer import datasets  # noqa: E402

OPENCLIPART = "/usr/share/openclipart/png"
TUXPAINT = "/usr/share/tuxpaint/stamps"
FORTUNES = "/usr/share/games/fortunes"
IMAGE_CLASSES = {  # class -> (openclipart folder, tuxpaint folder)
    "animals": ("animals", "animals"),
    "food": ("food", "food"),
    "transportation": ("transportation", "vehicles"),
}
TEXT_CLASSES = ("computers", "food", "linux", "sports", "wisdom")
MODES = ("as shipped", "L", "P+transparency", "I;16", "JPEG")


def _pngs(folder):
    found = []
    for dirpath, _, files in os.walk(folder):
        found += [os.path.join(dirpath, f) for f in files if f.lower().endswith(".png")]
    return sorted(found)


def _pixels(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as image:
                return image.size[0] * image.size[1]
        except Image.DecompressionBombError:
            return float("inf")


def mixed_mode_folder(root, per_class, seed=0):
    """Open Clip Art PNGs, one sub-folder per class, in five modes in turn."""
    rng = np.random.default_rng(seed)
    shipped = {}
    for label, (source, _) in IMAGE_CLASSES.items():
        files = _pngs(os.path.join(OPENCLIPART, source))
        # Pillow refuses images over 2 x 89.5 megapixels (decompression-bomb
        # guard); `load_image_folder` names such a file. Leave them out here.
        files = [f for f in files if _pixels(f) <= Image.MAX_IMAGE_PIXELS]
        files = [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
        os.makedirs(os.path.join(root, label))
        for i, path in enumerate(files):
            out = os.path.join(root, label, f"{i:04d}")
            mode = MODES[i % len(MODES)]
            with Image.open(path) as image:
                shipped[image.mode] = shipped.get(image.mode, 0) + 1
                if mode == "as shipped":
                    shutil.copy(path, out + ".png")
                    continue
                rgba = image.convert("RGBA")
                rgba.thumbnail((256, 256))
                white = Image.new("RGBA", rgba.size, "white")
                flat = Image.alpha_composite(white, rgba).convert("RGB")
                if mode == "L":
                    flat.convert("L").save(out + ".png")
                elif mode == "P+transparency":
                    rgba.convert("P", palette=Image.ADAPTIVE).save(out + ".png", transparency=0)
                elif mode == "I;16":
                    grey = np.asarray(flat.convert("L"), dtype=np.uint16) * 257
                    Image.fromarray(grey).save(out + ".png")  # 16-bit greyscale PNG
                else:
                    flat.save(out + ".jpg", quality=90)
    return shipped


def target_folder(root):
    """Tux Paint stamps as a class folder (labels for scoring only)."""
    for label, (_, source) in IMAGE_CLASSES.items():
        os.makedirs(os.path.join(root, label))
        for i, path in enumerate(_pngs(os.path.join(TUXPAINT, source))):
            if "_mirror" in path or "_back" in path:  # alternate views of one stamp
                continue
            shutil.copy(path, os.path.join(root, label, f"{i:04d}.png"))


def read_fortunes(category):
    # The files are UTF-8 (a few entries hold mojibake, as users' files do).
    with open(os.path.join(FORTUNES, category), encoding="utf-8", errors="replace") as f:
        entries = f.read().split("\n%\n")
    return [e.strip("\n") for e in entries if e.strip()]


def _cp1252(text):
    try:
        text.encode("cp1252")
        return True
    except UnicodeEncodeError:
        return False


def fortune_csv(path, per_class, seed=0):
    """cp1252 CSV: multi-line quoted texts, 5 empty-text rows, 1 blank line."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in TEXT_CLASSES:
        texts = read_fortunes(label)
        chosen = set(rng.choice(len(texts), min(per_class, len(texts)), replace=False).tolist())
        # Every entry with a non-ASCII character (e.g. an accented name) goes in.
        chosen |= {i for i, t in enumerate(texts) if any(ord(c) > 127 for c in t) and _cp1252(t)}
        rows += [(texts[i], label) for i in sorted(chosen)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    for k in range(5):
        rows.insert(7 * k + 3, ("", TEXT_CLASSES[k % len(TEXT_CLASSES)]))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["fortune", "category"])
    writer.writerows(rows)
    text = buffer.getvalue().replace("\r\n", "\n", 1) + "\n"  # and a blank line
    with open(path, "wb") as f:
        f.write(text.encode("cp1252", errors="replace"))
    multiline = sum("\n" in t for t, _ in rows)
    non_ascii = sum(any(b > 127 for b in t.encode("cp1252", errors="replace")) for t, _ in rows)
    return len(rows), multiline, non_ascii


def cli_fit(*args):
    logdir = tempfile.mkdtemp()
    cmd = [sys.executable, "-c", "import sys; from keras_transfer.cli import main; sys.exit(main())",
           "fit", "--logdir", logdir,
           "--run-name", "run", "--verbose", "0", *args]
    start = time.time()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    seconds = time.time() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    with open(os.path.join(logdir, "run", "results.json")) as f:
        results = json.load(f)
    warned = [l for l in result.stderr.splitlines() if "skipped" in l]
    return results, seconds, warned


def logistic(x, y, x_test, y_test, c=1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(x, y)
    return float((model.predict(x_test) == y_test).mean())


def image_features(x, size):
    from keras_transfer.backbones import efficientnet_lite0

    base = efficientnet_lite0(include_top=False, pooling="avg", input_shape=(size, size, 3))
    return base.predict(x, batch_size=32, verbose=0)


def keras_head(f, y, f_test, y_test, classes, seed, epochs=60):
    keras.utils.set_random_seed(seed)
    head = keras.Sequential([keras.Input(f.shape[1:]), keras.layers.Dense(classes, activation="softmax")])
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    head.fit(f, y, epochs=epochs, batch_size=32, verbose=0)
    return float(head.evaluate(f_test, y_test, verbose=0)[1])


def adaptation(fs, ys, ft, yt, seed, weight, epochs=40):
    import tensorflow as tf

    from keras_transfer.models import DiscrepancyAlignmentModel

    keras.utils.set_random_seed(seed)
    mean, std = fs.mean(0), fs.std(0) + 1e-6
    fs, ft = (fs - mean) / std, (ft - mean) / std
    encoder = keras.Sequential([keras.Input(fs.shape[1:]), keras.layers.Dense(128, activation="relu")])
    head = keras.Sequential([keras.Input((128,)), keras.layers.Dense(3)])
    model = DiscrepancyAlignmentModel(encoder, head, "coral", weight,
                                      task_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = 32
    source = tf.data.Dataset.from_tensor_slices((fs, ys)).shuffle(len(fs), seed=seed).batch(batch, drop_remainder=True)
    target = tf.data.Dataset.from_tensor_slices(ft).shuffle(len(ft), seed=seed + 1).repeat().batch(batch, drop_remainder=True)
    ds = tf.data.Dataset.zip(source, target).map(lambda s, t: ({"source": s[0], "target": t}, s[1]))
    model.fit(ds, epochs=epochs, verbose=0)
    pred = model.predict(ft, verbose=0).argmax(-1)
    return float((pred == yt).mean())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_class, size, seeds = (30, 96, (0,)) if args.quick else (100, 128, (0, 1, 2))
    tmp = tempfile.mkdtemp()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load before {os.getloadavg()[0]:.2f}")

    # --- images, mixed modes -------------------------------------------------
    folder = os.path.join(tmp, "clipart")
    shipped = mixed_mode_folder(folder, per_class)
    on_disk = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            with Image.open(os.path.join(dirpath, f)) as image:
                key = f"{image.format} {image.mode}"
                on_disk[key] = on_disk.get(key, 0) + 1
    print(f"image folder: {3 * per_class} files; modes as shipped {shipped}; on disk {on_disk}")
    (x, y), (xt, yt), names = datasets.load_image_folder(folder, (size, size), test_fraction=0.3, seed=0)
    grey16 = [f for f in os.listdir(os.path.join(folder, "food")) if int(f[:4]) % 5 == 3]
    print(f"classes {names}, train {len(y)}, test {len(yt)}; pixel mean {x.mean():.1f}, "
          f"all-white images {int((x.reshape(len(x), -1).min(1) == 255).sum())}")
    f_train, f_test = image_features(x, size), image_features(xt, size)
    small = lambda a: np.asarray([np.asarray(Image.fromarray(i).resize((32, 32))) for i in a]).reshape(len(a), -1)
    rows = [("scikit-learn logistic regression, 32x32 pixels", logistic(small(x), y, small(xt), yt))]
    rows.append(("scikit-learn logistic regression, EfficientNet-Lite0 features", logistic(f_train, y, f_test, yt, c=0.1)))
    rows.append(("Python API: load_image_folder + efficientnet_lite0 + Keras head (median of seeds)",
                 float(np.median([keras_head(f_train, y, f_test, yt, 3, s) for s in seeds]))))
    results, seconds, _ = cli_fit("--base", "efficientnet_lite0", "--data", folder, "--image-size", str(size),
                                  "--test-fraction", "0.3", "--epochs", "30")
    rows.append((f"CLI: keras-transfer fit --base efficientnet_lite0 ({seconds:.0f} s)", results["test_accuracy"]))
    print("\n| images: Open Clip Art, 3 classes | held-out accuracy |\n|---|---|")
    for name, acc in rows:
        print(f"| {name} | {acc:.3f} |")

    # --- text: fortunes, cp1252 CSV -----------------------------------------
    path = os.path.join(tmp, "fortunes.csv")
    n_rows, multiline, non_ascii = fortune_csv(path, per_class=60 if args.quick else 150)
    print(f"\nfortunes.csv: {n_rows} rows ({multiline} multi-line, {non_ascii} non-ASCII, 5 empty), cp1252")
    try:
        datasets.load_text_csv(path, "fortune", "category")
    except ValueError as error:
        print(f"default utf-8: ValueError: {error}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (tx, ty), (tx_test, ty_test), tnames = datasets.load_text_csv(
            path, "fortune", "category", test_fraction=0.3, encoding="cp1252", on_bad_lines="warn")
    print(f"cp1252 + warn: {len(tx)} train, {len(tx_test)} test, classes {tnames}; warning: {caught[0].message}")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2)
    baseline = LogisticRegression(C=10, max_iter=2000).fit(tfidf.fit_transform(tx), ty)
    text_rows = [("scikit-learn TF-IDF + logistic regression",
                  float((baseline.predict(tfidf.transform(tx_test)) == ty_test).mean()))]
    from keras_transfer.backbones import minilm
    from keras_transfer.backbones import minilm_preprocessor

    encoder, prep = minilm(sequence_length=128), minilm_preprocessor(128)
    e_train = encoder.predict(prep(list(tx)), batch_size=32, verbose=0)
    e_test = encoder.predict(prep(list(tx_test)), batch_size=32, verbose=0)
    text_rows.append(("Python API: load_text_csv + minilm + Keras head (median of seeds)",
                      float(np.median([keras_head(e_train, ty, e_test, ty_test, len(tnames), s, 100) for s in seeds]))))
    results, seconds, warned = cli_fit("--data", path, "--text-column", "fortune", "--label-column", "category",
                                       "--encoding", "cp1252", "--on-bad-lines", "warn",
                                       "--sequence-length", "128", "--test-fraction", "0.3", "--epochs", "100")
    text_rows.append((f"CLI: keras-transfer fit --encoding cp1252 --on-bad-lines warn ({seconds:.0f} s)",
                      results["test_accuracy"]))
    print(f"CLI stderr: {warned[:1]}")
    print(f"\n| text: fortunes, {len(tnames)} classes | held-out accuracy |\n|---|---|")
    for name, acc in text_rows:
        print(f"| {name} | {acc:.3f} |")

    # --- adaptation: clip art -> Tux Paint stamps (unlabeled) ----------------
    target = os.path.join(tmp, "tuxpaint")
    target_folder(target)
    (xs_all, ys_all), _, _ = datasets.load_image_folder(folder, (size, size), test_fraction=0, seed=0)
    (xt_all, yt_all), _, tnames2 = datasets.load_image_folder(target, (size, size), test_fraction=0, seed=0)
    print(f"\ntarget: Tux Paint stamps {len(yt_all)} ({dict(zip(tnames2, np.bincount(yt_all).tolist()))}), "
          f"source: {len(ys_all)} clip-art images")
    fs, ft = image_features(xs_all, size), image_features(xt_all, size)
    da_rows = [("scikit-learn logistic regression on source features", logistic(fs, ys_all, ft, yt_all, c=0.1))]
    for name, weight in (("source only", 0.0), ("CORAL, weight 0.1", 0.1), ("CORAL, weight 1", 1.0)):
        accs = [adaptation(fs, ys_all, ft, yt_all, s, weight) for s in seeds]
        da_rows.append((f"Python API: DiscrepancyAlignmentModel, {name} (seeds {list(seeds)}: "
                        + ", ".join(f"{a:.3f}" for a in accs) + ")", float(np.median(accs))))
    print("\n| adaptation: clip art -> Tux Paint (target labels unused) | target accuracy |\n|---|---|")
    for name, acc in da_rows:
        print(f"| {name} | {acc:.3f} |")
    print(f"\nload after {os.getloadavg()[0]:.2f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
