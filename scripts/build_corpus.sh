#!/usr/bin/env bash
# Build a multi-language training corpus from real source installed by package name, then mine
# (query, document) pairs from it, decontaminated against the evaluation sets.
#
#   scripts/build_corpus.sh [OUT_DIR]          (default: work/corpus; run as root for apt)
#
# Environment: SKIP_APT=1 to use what is installed, PYTHON=path/to/python (default: the venv's),
# EXCLUDE_GLOB=dir/* (BEIR folders to decontaminate against), MAX_PER_SOURCE (default 3000),
# WORKERS (parsing processes, default 2), MAX_FILES_PER_SOURCE (files sampled per source, default 400).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/work/corpus}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
EXCLUDE_GLOB="${EXCLUDE_GLOB:-$ROOT/../shared/data/retrieval/*}"
MBPP="${MBPP:-$ROOT/../shared/data/raw/mbpp/mbpp.jsonl}"
MAX_PER_SOURCE="${MAX_PER_SOURCE:-3000}"
WORKERS="${WORKERS:-2}"
MAX_FILES_PER_SOURCE="${MAX_FILES_PER_SOURCE:-400}"
mkdir -p "$OUT"

# Debian packages that ship source code (found with `apt-cache search`):
APT_PACKAGES=(
  golang-src                 # Go standard library
  openjdk-17-source          # the JDK's src.zip (Java class library)
  rust-src                   # Rust std/core/alloc source
  libruby3.1                 # Ruby standard library
  node-lodash node-async node-acorn node-commander node-axios node-d3-array node-d3-scale node-moment
  php-guzzlehttp-guzzle php-guzzlehttp-psr7 php-doctrine-dbal php-league-commonmark php-league-flysystem
  lua-penlight               # Lua library with doc comments
  unzip                      # to open src.zip
)

if [[ "${SKIP_APT:-0}" != 1 ]]; then
  if [[ $(id -u) -ne 0 ]]; then echo "run as root (apt-get) or set SKIP_APT=1" >&2; exit 2; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # install what exists; report what does not instead of failing the whole build
  available=()
  for pkg in "${APT_PACKAGES[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then available+=("$pkg"); else echo "not in apt: $pkg" >&2; fi
  done
  apt-get install -y -q --no-install-recommends "${available[@]}"
fi

"$ROOT/scripts/corpus_sources.sh" "$OUT/src"

excludes=()
for d in $EXCLUDE_GLOB; do [[ -f "$d/corpus.jsonl" ]] && excludes+=(--exclude "$d"); done
mbpp=()
[[ -f "$MBPP" ]] && mbpp=(--mbpp "$MBPP")

mapfile -t sources < <(find "$OUT/src" -mindepth 1 -maxdepth 1 | sort)
nice -n 10 "$PYTHON" -m codesift.cli data mine "${sources[@]}" -o "$OUT/pairs.jsonl" \
  "${excludes[@]}" "${mbpp[@]}" --split-sources --max-per-source "$MAX_PER_SOURCE" --workers "$WORKERS" --max-files-per-source "$MAX_FILES_PER_SOURCE" \
  --stats "$OUT/stats.json" --report "$OUT/stats.md"
echo "pairs: $OUT/pairs.jsonl  stats: $OUT/stats.md"
