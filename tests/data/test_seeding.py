import json
import os
import subprocess
import sys

from tests.testing import REPO_ROOT
from tests.testing import TestCase


def _start(global_seed, prior_ops):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.data.seeded_pipelines", str(global_seed), str(prior_ops)],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _digests(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    line = [l for l in out.splitlines() if l.startswith("DIGESTS ")][-1]
    return json.loads(line[len("DIGESTS "):])


class SeededPipelinesTest(TestCase):
    def test_same_output_whatever_the_global_seed_and_prior_ops(self):
        # Two processes: no global seed and nothing before, versus a global
        # seed and several unrelated random ops and seeded datasets first.
        # (`Dataset.shuffle(seed=)` / `Dataset.random(seed=)` fold in the
        # global seed and op counter, so the pipelines differed here before.)
        first, second = _start("none", 0), _start(1234, 3)  # in parallel
        a, b = _digests(first), _digests(second)
        self.assertEqual(a, b)
        for name, (epoch_1, epoch_2) in a.items():
            self.assertNotEqual(epoch_1, epoch_2, name)  # new draws each epoch
        # A second call in the same process starts again from epoch 1.
        self.assertEqual(a["image"], a["image_again"])
