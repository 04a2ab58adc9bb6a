#!/usr/bin/env bash
# codesift-mini end to end, resumable (finished stages are skipped; an interrupted training resumes):
#   scripts/train_mini.sh [all|data|train|eval|ship]      (default: all; the LR sweep is scripts/sweep.sh)
# Needs work/corpus/pairs.jsonl (scripts/build_corpus.sh), work/public/*.jsonl (scripts/public_data.py),
# work/commits/pairs.jsonl (scripts/build_commit_pairs.sh) and the venv (scripts/setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; cd "$ROOT"
STAGE="${1:-all}"
case "$STAGE" in all|data|train|eval|ship) ;; *) echo "error: unknown stage '$STAGE': use all, data, train, eval or ship" >&2; exit 2 ;; esac
BIN="$ROOT/.venv/bin"; EVAL_ROOT="${EVAL_ROOT:-$ROOT/../shared/data/retrieval}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p runs/data results/train

if [[ "$STAGE" == all || "$STAGE" == data ]] && [ ! -s runs/data/mix-v1.jsonl ]; then
  "$BIN/codesift" data mix configs/mix-v1.yaml -o runs/data/mix-v1.jsonl --holdout-dir runs/data/val-v1 --report results/train/mix-v1.md
fi
if [[ "$STAGE" == all || "$STAGE" == train ]] && [ ! -f runs/codesift-mini/modules.json ]; then
  if ls runs/codesift-mini/checkpoints/* >/dev/null 2>&1; then "$BIN/codesift" train configs/codesift-mini.yaml --resume
  else "$BIN/codesift" train configs/codesift-mini.yaml; fi
  cp runs/codesift-mini/metrics.jsonl results/train/codesift-mini-metrics.jsonl
fi
if [[ "$STAGE" == all || "$STAGE" == eval ]] && [ ! -f results/train/codesift-mini/results.json ]; then
  "$BIN/codesift" eval --model runs/codesift-mini --name codesift-mini --out results/train/codesift-mini \
    --data "$EVAL_ROOT/humaneval" --data "$EVAL_ROOT/mbpp-test" --data "$EVAL_ROOT/spider-dev" --data "$EVAL_ROOT/cosqa-dev" --quiet
  "$BIN/codesift" eval --compare results/baselines/bm25 results/baselines/all-MiniLM-L6-v2 results/baselines/SmolLM2-135M-untuned \
    results/train/smollm2-135m results/train/codesift-mini --out results/train/compare-mini --quiet
  "$BIN/python" scripts/plot_training.py results/train/codesift-mini-training.png "codesift-mini=results/train/codesift-mini-metrics.jsonl"
fi
