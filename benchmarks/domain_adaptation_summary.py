"""Summarises `domain_adaptation.py --out` JSON files: the method table
(mean +- std over seeds, per direction) and the label-free selection study
(for each direction and seed, the method SND picks among those run, against
the best method by target accuracy).

Run: python benchmarks/domain_adaptation_summary.py results/*.json \
         [--exclude "SHOT + zoom" SHOT "IM (ramp)"]
"""

import json
import sys
from collections import defaultdict

import numpy as np


def main(paths, exclude=()):
    runs = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        direction = data["args"].get("direction", "mnist->usps")
        for r in data["results"]:
            if r["method"] in exclude:
                continue
            runs[(direction, r["method"], r["seed"])] = r
    table = defaultdict(list)
    for (direction, method, seed), r in sorted(runs.items()):
        table[(direction, method)].append((seed, r))
    print("| direction | method | mean +- std | per seed | seeds | load |")
    print("|---|---|---|---|---|---|")
    for (direction, method), rs in sorted(table.items()):
        acc = [100 * r["target_accuracy"] for _, r in rs]
        per_seed = ", ".join(f"{a:.1f}" for a in acc)
        seeds = ", ".join(str(s) for s, _ in rs)
        loads = ", ".join(f"{r['load']:.0f}" for _, r in rs)
        print(f"| {direction} | {method} | {np.mean(acc):.1f} +- "
              f"{np.std(acc):.1f} | {per_seed} | {seeds} | {loads} |")
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
