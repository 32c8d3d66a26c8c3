"""Label-free choice of the MMD / CORAL alignment weight (MNIST-5k -> USPS).

The same ADDA-protocol setting as `domain_adaptation.py --augment zoom`
(LeNet, SGD momentum 0.9, annealed lr 0.02, 15 epochs, 64 + 64 per step,
source zoom-in `ImageAugmentation(zoom=(20 / 28, 1.0))`), except that 500 of
the 5,000 MNIST images are held out as a labelled *source* validation set.
For each candidate weight two label-free scores are computed:

- source validation accuracy of the adapted model (does alignment hurt the
  source task?);
- reverse validation (Zhong et al. 2010; Ganin et al. 2016, section 5.1.2):
  the adapted model labels the USPS training images; a reverse model of the
  same method and weight is trained for 3 epochs on those pseudo-labels (USPS as source,
  the 4,500 MNIST training images as unlabelled target) and scored on the
  held-out MNIST validation set.

The weight with the best reverse-validation score is the one chosen. USPS
test accuracy is printed for each weight for the record only; it is not used
to choose anything.

Results: the last section of `domain_adaptation.md`.

Run: python benchmarks/domain_adaptation_weights.py --methods MMD:1 MMD:10 \
         CORAL:10 CORAL:1000 --seed 0 --reverse-epochs 3 --out /tmp/weights.json
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

from domain_adaptation import AnnealedLearningRate  # noqa: E402
from domain_adaptation import dataset  # noqa: E402
from domain_adaptation import lenet  # noqa: E402
from domain_adaptation import load  # noqa: E402

from keras_transfer.models import DiscrepancyAlignmentModel  # noqa: E402


def train(discrepancy, weight, xs, ys, xt, seed, epochs, lr, augment):
    keras.utils.set_random_seed(seed)
    encoder, head = lenet(xs.shape[1:])
    model = DiscrepancyAlignmentModel(encoder, head, discrepancy, weight)
    steps = len(xs) // 64
    model.compile(optimizer=keras.optimizers.SGD(
        AnnealedLearningRate(lr, steps * epochs), momentum=0.9))
    ds = dataset(xs, ys, xt, seed, augment=augment)
    history = model.fit(ds, epochs=epochs, verbose=0)
    return model, history.history


def accuracy(model, x, y):
    return float((model.predict(x, batch_size=512, verbose=0).argmax(-1) == y).mean())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["MMD:1", "MMD:10", "CORAL:10", "CORAL:1000"],
                        help="METHOD:WEIGHT candidates, METHOD in MMD, CORAL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--reverse-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    xs, ys, xt, xte, yte = load("adda")
    order = np.random.default_rng(args.seed).permutation(len(xs))
    val, tr = order[:500], order[500:]
    results = []
    for spec in args.methods:
        name, weight = spec.split(":")
        weight = float(weight)
        start = time.time()
        model, h = train(name.lower(), weight, xs[tr], ys[tr], xt, args.seed,
                         args.epochs, args.lr, augment=True)
        pseudo = model.predict(xt, batch_size=512, verbose=0).argmax(-1).astype("int32")
        reverse, _ = train(name.lower(), weight, xt, pseudo, xs[tr], args.seed,
                           args.reverse_epochs, args.lr, augment=False)
        r = {
            "method": name, "weight": weight, "seed": args.seed,
            "source_val_accuracy": accuracy(model, xs[val], ys[val]),
            "reverse_val_accuracy": accuracy(reverse, xs[val], ys[val]),
            "target_test_accuracy_not_used": accuracy(model, xte, yte),
            "alignment_loss_last_epoch": h["alignment_loss"][-1],
            "seconds": time.time() - start, "load": os.getloadavg()[0],
        }
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "results": results,
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, f, indent=1)
    for name in sorted({r["method"] for r in results}):
        rows = [r for r in results if r["method"] == name]
        best = max(rows, key=lambda r: r["reverse_val_accuracy"])
        print(f"{name}: chosen weight {best['weight']} (reverse validation "
              f"{best['reverse_val_accuracy']:.3f}); USPS test {best['target_test_accuracy_not_used']:.3f}")


if __name__ == "__main__":
    main()
