#!/usr/bin/env bash
# The test suite on every Keras backend it supports (this is what CI runs).
#
#   pass 1: every test on the TensorFlow backend (arguments are passed on to pytest);
#   pass 2: the backend-agnostic tests (layers, losses, regularizers, models, callbacks,
#           optimizers, strategies, backbones, the model walk) again with KERAS_BACKEND=jax, except those marked
#           `tensorflow_only`;
#   pass 3: the same tests with KERAS_BACKEND=torch, only where PyTorch is installed
#           (it is not a dependency; without it the pass is skipped and says so).
#
# Exits non-zero when any pass fails; the pytest summary line of each pass is repeated at the end.
set -uo pipefail
cd "$(dirname "$0")/.."

BACKEND_TESTS=(tests/layers tests/losses tests/regularizers tests/models tests/callbacks
               tests/optimizers tests/strategies tests/backbones tests/test_walk.py)
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
status=0
summaries=()

run_pass() {  # run_pass NAME BACKEND PYTEST-ARGS...
  local name="$1" backend="$2"
  shift 2
  echo "== ${name}: KERAS_BACKEND=${backend} python3 -m pytest -q $(printf '%q ' "$@")"
  KERAS_BACKEND="$backend" python3 -m pytest -q "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc="${PIPESTATUS[0]}"
  [ "$rc" = 0 ] || status=1
  summaries+=("${name} (${backend}, exit ${rc}): $(grep -E '(passed|failed|error|skipped|no tests ran)' "$LOGS/$name.log" | tail -n 1)")
}

run_pass "pass 1" tensorflow "$@"
run_pass "pass 2" jax -m "not tensorflow_only" "${BACKEND_TESTS[@]}"
if python3 -c "import torch" >/dev/null 2>&1; then
  run_pass "pass 3" torch -m "not tensorflow_only" "${BACKEND_TESTS[@]}"
else
  summaries+=("pass 3 (torch): skipped, PyTorch is not installed (pip install torch to run it)")
fi

echo
echo "== summary"
printf '%s\n' "${summaries[@]}"
exit "$status"
