"""Summarises `domain_adaptation.py --out` JSON files: the method table
(mean +- std over seeds, per direction) and the label-free selection studies.

Without `--scores` runs: for each direction and seed, the method SND picks
among those run (final models), against the best method by target accuracy.

With `domain_adaptation.py --scores` runs (per-epoch label-free scores), for
each score (source validation accuracy, SND, DEV, reverse validation) and
each candidate set:

- `methods`: the final models of the methods run on one direction and seed
  (the MMD / CORAL weight-sweep runs `MMD:w`, `CORAL:w` excluded);
- `MMD weight`, `CORAL weight`: the final models of one weight sweep
  (source only is its weight 0, MMD its weight 1, CORAL its weight 10);
- `epochs`: the 15 epochs of one run (every run, sweep runs included);
- `methods x epochs`: every epoch of every method of one direction and seed;

the pick, the oracle (best target test accuracy among the candidates) and
the cost (oracle minus pick, points). The target test accuracy chooses
nothing; it only measures the picks. Two references: `last epoch` / `a
priori` (no score) and `random` (the mean cost of a uniformly random pick).

Run: python benchmarks/domain_adaptation_summary.py results/*.json \\
         [--exclude "SHOT + zoom" SHOT "IM (ramp)"]
"""

import json
import sys
from collections import defaultdict

import numpy as np

# score -> (key in the per-epoch rows, higher is better)
SCORES = {
    "source val acc": ("source_val_accuracy", True),
    "SND": ("snd", True),
    "DEV": ("dev", False),
    "reverse val": ("reverse_validation", True),
}

# Methods of the table that are points of the weight sweeps: MMD and CORAL
# at their a-priori weights, and source only, which is the same model with
# alignment weight 0 (`DiscrepancyAlignmentModel(..., "coral", 0.0)`: the
# same training whichever discrepancy is multiplied by 0).
A_PRIORI = {"MMD": ("MMD:1",), "CORAL": ("CORAL:10",),
            "source only": ("MMD:0", "CORAL:0")}


def _pick(rows, key, higher):
    # Ties go to the first candidate (the earlier epoch, the earlier method).
    values = [r[key] for r in rows]
    return int(np.argmax(values) if higher else np.argmin(values))


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _is_sweep(method):
    return ":" in method.split(" + ")[0]


def selection(runs):
    """`runs`: {(direction, method, seed): result with `per_epoch`}."""
    sets = []  # (kind, direction, seed, label, candidates [(name, row)])
    by_seed = defaultdict(list)
    for (direction, method, seed), r in sorted(runs.items()):
        rows = r["per_epoch"]
        sets.append(("epochs", direction, seed, method,
                     [(f"epoch {row['epoch']}", row) for row in rows]))
        base = method.split(" + ")[0]
        for point in A_PRIORI.get(base, ()):  # methods that are sweep points
            kind = point.split(":")[0] + " weight"
            by_seed[(kind, direction, seed)].append((point, rows[-1]))
        if _is_sweep(method):
            kind = base.split(":")[0] + " weight"
            by_seed[(kind, direction, seed)].append((base, rows[-1]))
        else:
            by_seed[("methods", direction, seed)].append((method, rows[-1]))
            by_seed[("methods x epochs", direction, seed)].extend(
                (f"{method}, epoch {row['epoch']}", row) for row in rows)
    for (kind, direction, seed), candidates in sorted(by_seed.items()):
        if kind.endswith(" weight"):
            candidates.sort(key=lambda c: float(c[0].split(":")[1]))
        if len({name.split(", epoch")[0] for name, _ in candidates}) >= 2:
            sets.append((kind, direction, seed, f"seed {seed}", candidates))
    return sets


def print_selection(runs):
    sets = selection(runs)
    costs, rhos = defaultdict(list), defaultdict(list)
    print("### Picks per candidate set (target test accuracy, %; cost in points)")
    print()
    print("| set | direction | candidates | oracle (acc) | "
          + " | ".join(f"{s} pick (acc, cost)" for s in SCORES)
          + " | random: mean cost |")
    print("|---|---|---|---|" + "---|" * len(SCORES) + "---|")
    for kind, direction, seed, label, candidates in sets:
        acc = np.array([100 * row["target_accuracy"] for _, row in candidates])
        best = int(np.argmax(acc))
        cells = []
        for score, (key, higher) in SCORES.items():
            i = _pick([row for _, row in candidates], key, higher)
            cost = acc[best] - acc[i]
            costs[(kind, direction, score)].append(cost)
            cells.append(f"{candidates[i][0]} ({acc[i]:.1f}, {cost:.1f})")
            sign = 1.0 if higher else -1.0
            if len(candidates) >= 5:  # a rank correlation of 2-4 says little
                rhos[(kind, direction, score)].append(_spearman(
                    sign * np.array([row[key] for _, row in candidates]), acc))
        # Reference without a score: the last epoch for an epoch set.
        if kind == "epochs":
            costs[(kind, direction, "last epoch")].append(acc[best] - acc[-1])
        costs[(kind, direction, "random")].append(float(np.mean(acc[best] - acc)))
        if kind == "epochs" and len(sets) > 40:
            continue  # the per-run epoch picks are summarised only
        print(f"| {kind}: {label} | {direction} | {len(candidates)} | "
              f"{candidates[best][0]} ({acc[best]:.1f}) | " + " | ".join(cells)
              + f" | {np.mean(acc[best] - acc):.1f} |")
    print()
    print("### Cost of each score's pick, points (mean / max over candidate sets)")
    print()
    refs = ["last epoch", "random"]
    print("| set | direction | sets | " + " | ".join(list(SCORES) + refs) + " |")
    print("|---|---|---|" + "---|" * (len(SCORES) + len(refs)))
    kinds = sorted({(k, d) for k, d, _ in costs})
    for kind, direction in kinds:
        n = len(costs[(kind, direction, "random")])
        cells = []
        for score in list(SCORES) + refs:
            c = costs.get((kind, direction, score))
            cells.append("-" if not c else f"{np.mean(c):.1f} / {np.max(c):.1f}")
        print(f"| {kind} | {direction} | {n} | " + " | ".join(cells) + " |")
    print()
    print("### Spearman correlation (ordinal ranks) of each score, oriented so "
          "that + = agrees, with target accuracy; mean over candidate sets of "
          "5 or more")
    print()
    print("| set | direction | sets | " + " | ".join(SCORES) + " |")
    print("|---|---|---|" + "---|" * len(SCORES))
    for kind, direction in kinds:
        n = len(rhos[(kind, direction, "SND")])
        if not n:
            continue
        cells = [f"{np.mean(rhos[(kind, direction, score)]):+.2f}" for score in SCORES]
        print(f"| {kind} | {direction} | {n} | " + " | ".join(cells) + " |")


def main(paths, exclude=()):
    runs, scored = {}, {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        direction = data["args"].get("direction", "mnist->usps")
        for r in data["results"]:
            if r["method"] in exclude:
                continue
            method = r["method"]
            if "per_epoch" in r:
                scored[(direction, method, r["seed"])] = r
                if _is_sweep(method):
                    continue
                if direction == "mnist->usps":
                    # Trained on 4,500 of the 5,000 MNIST digits: not the
                    # table's protocol, so a row of its own.
                    method += " (4,500 src)"
            runs[(direction, method, r["seed"])] = r
    table = defaultdict(list)
    for (direction, method, seed), r in sorted(runs.items()):
        table[(direction, method)].append((seed, r))
    print("| direction | method | mean +- std | per seed | seeds | load | backend |")
    print("|---|---|---|---|---|---|---|")
    for (direction, method), rs in sorted(table.items()):
        acc = [100 * r["target_accuracy"] for _, r in rs]
        per_seed = ", ".join(f"{a:.1f}" for a in acc)
        seeds = ", ".join(str(s) for s, _ in rs)
        loads = ", ".join(f"{r['load']:.0f}" for _, r in rs)
        backends = ", ".join(sorted({r.get("backend", "tensorflow") for _, r in rs}))
        print(f"| {direction} | {method} | {np.mean(acc):.1f} +- "
              f"{np.std(acc):.1f} | {per_seed} | {seeds} | {loads} | {backends} |")
    print()
    if scored:
        print_selection(scored)
        print()
    runs = {k: r for k, r in runs.items() if "per_epoch" not in r}
    if not runs:
        return
    print("Final-model SND on the runs without `--scores`:")
    print()
    print("| direction | seed | candidates | SND pick (acc) | best by target labels (acc) | cost |")
    print("|---|---|---|---|---|---|")
    by_seed = defaultdict(list)
    for (direction, method, seed), r in runs.items():
        by_seed[(direction, seed)].append(r)
    for (direction, seed), rs in sorted(by_seed.items()):
        if len(rs) < 2:
            continue
        pick = max(rs, key=lambda r: r["snd"])
        best = max(rs, key=lambda r: r["target_accuracy"])
        cost = 100 * (best["target_accuracy"] - pick["target_accuracy"])
        print(f"| {direction} | {seed} | {len(rs)} | {pick['method']} "
              f"({100 * pick['target_accuracy']:.1f}) | {best['method']} "
              f"({100 * best['target_accuracy']:.1f}) | {cost:.1f} |")


if __name__ == "__main__":
    argv = sys.argv[1:]
    cut = argv.index("--exclude") if "--exclude" in argv else len(argv)
    main(argv[:cut], argv[cut + 1:])
