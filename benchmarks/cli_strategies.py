"""Each `keras-transfer fit --strategy` once on the default data.

MiniLM-L6 on 1,000 Rotten Tomatoes reviews (fresh vs rotten), scored on
1,000 held-out reviews: `keras-transfer fit --strategy X` with every other
option at its default, one run per strategy, one after the other, each in
a fresh process (its wall time includes start-up). Writes
`benchmarks/cli_strategies.md` after every run, so a stopped benchmark
keeps the rows it finished.

Run from the repository root, under `nice` on a shared machine:

    nice python3 benchmarks/cli_strategies.py [STRATEGY ...]
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

STRATEGIES = (
    "feature_extraction", "lora", "adapters", "gradual", "fine_tuning", "l2sp",
    "auto",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "benchmarks", "cli_strategies.md")


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def commit():
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
        cwd=ROOT,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "keras_transfer"],
        capture_output=True, text=True, cwd=ROOT,
    ).stdout.strip()
    return head + ("+changes" if dirty else "")


def run(strategy, logdir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    before = uptime()
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys; from keras_transfer.cli import main; sys.exit(main())",
         "fit", "--strategy", strategy, "--logdir", logdir, "--run-name", strategy,
         "--verbose", "2"],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )
    row = {
        "strategy": strategy, "returncode": result.returncode,
        "outer_wall_s": round(time.time() - start, 1),
        "uptime_before": before, "uptime_after": uptime(), "commit": commit(),
    }
    path = os.path.join(logdir, strategy, "results.json")
    if result.returncode == 0 and os.path.isfile(path):
        with open(path) as f:
            row["results"] = json.load(f)
    else:
        row["error"] = result.stderr[-2000:]
    return row


def table(rows):
    lines = [
        "# `keras-transfer fit --strategy X` on the default data",
        "",
        "MiniLM-L6 on 1,000 Rotten Tomatoes reviews (fresh vs rotten), scored "
        "on 1,000 held-out reviews; every option at its default, one run per "
        "strategy (seed 0), each in a fresh process (`benchmarks/"
        "cli_strategies.py`). Validation: 200 of the 1,000 training reviews "
        "(feature_extraction refits on all 1,000 after choosing on them). "
        "A linear probe (scikit-learn logistic regression, best C chosen on "
        "the test set, so optimistic) scores 0.741 on the same features.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, SHARED "
        "with other jobs during the runs (load averages below), so wall times "
        "are inflated and noisy; CPU time is the process's own. Date: "
        f"{datetime.date.today().isoformat()}.",
        "",
        "| strategy | ran | test accuracy | validation accuracy | epochs | "
        "learning rate | trainable params | wall time (s) | CPU time (s) | "
        "load before / after (1 min) | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        load = " / ".join(
            row[k].split("load average:")[1].split(",")[0].strip()
            for k in ("uptime_before", "uptime_after")
        )
        if "results" not in row:
            lines.append(
                f"| {row['strategy']} | failed (exit {row['returncode']}) | | | | | | "
                f"{row['outer_wall_s']} | | {load} | {row['commit']} |"
            )
            continue
        r = row["results"]
        chosen = r["chosen"]
        ran = chosen.get("strategy", r["strategy"])
        val = r.get("validation_accuracy")
        lines.append(
            f"| {r['strategy']} | {ran} | {r['test_accuracy']:.4f} | "
            f"{'' if val is None else f'{val:.4f}'} | {r['epochs']} | "
            f"{chosen.get('learning_rate', 0):g} | {r['trainable_params']:,} | "
            f"{r['wall_time_s']} | {r['cpu_time_s']} | {load} | {row['commit']} |"
        )
    autos = [r for r in rows if "results" in r and "auto" in r["results"]["chosen"]]
    for row in autos:
        auto = row["results"]["chosen"]["auto"]
        lines += [
            "",
            f"`auto` compared the target with {auto['reference']} on the base's "
            f"features: proxy A-distance {auto['proxy_a_distance']:.3f}, MMD "
            f"{auto['mmd']:.4f}, domain LogME {auto['domain_logme']:.3f}. "
            f"Reason recorded: {auto['reason']}",
        ]
    lines += ["", "Full `results.json` of each run: `benchmarks/cli_strategies.json`.", ""]
    return "\n".join(lines)


def main(argv):
    strategies = argv or STRATEGIES
    logdir = tempfile.mkdtemp(prefix="cli_strategies_")
    rows = []
    for strategy in strategies:
        rows.append(run(strategy, logdir))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "results"})[:500],
              flush=True)
        with open(OUTPUT, "w") as f:
            f.write(table(rows))
        with open(OUTPUT.replace(".md", ".json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
