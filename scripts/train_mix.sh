#!/usr/bin/env bash
# Train one model on the five-task mix (configs/mix-v1.yaml) end to end, resumable (finished stages are
# skipped; an interrupted training resumes from its last checkpoint):
#   scripts/train_mix.sh CONFIG NAME [all|data|train|eval]        (default: all)
# CONFIG: a training config whose `out` is the run folder (configs/codesift-mini.yaml, configs/smollm2-135m-mix.yaml).
# NAME: the results name: results/train/NAME/ (eval), NAME-metrics.jsonl (step log), NAME-training.png,
# and results/train/compare-NAME/ (against BM25, MiniLM, untuned SmolLM2 and the earlier runs).
# Needs work/corpus/pairs.jsonl (scripts/build_corpus.sh), work/public/*.jsonl (scripts/public_data.py),
# work/commits/pairs.jsonl (scripts/build_commit_pairs.sh) and the venv (scripts/setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; cd "$ROOT"
[ $# -ge 2 ] || { echo "usage: scripts/train_mix.sh CONFIG NAME [all|data|train|eval]" >&2; exit 2; }
CONFIG="$1"; NAME="$2"; STAGE="${3:-all}"
case "$STAGE" in all|data|train|eval) ;; *) echo "error: unknown stage '$STAGE': use all, data, train or eval" >&2; exit 2 ;; esac
[ -f "$CONFIG" ] || { echo "error: config $CONFIG does not exist" >&2; exit 2; }
BIN="$ROOT/.venv/bin"; EVAL_ROOT="${EVAL_ROOT:-$ROOT/../shared/data/retrieval}"
OUT="$("$BIN/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["out"])' "$CONFIG")"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p runs/data results/train

if [[ "$STAGE" == all || "$STAGE" == data ]] && [ ! -s runs/data/mix-v1.jsonl ]; then
  "$BIN/codesift" data mix configs/mix-v1.yaml -o runs/data/mix-v1.jsonl --holdout-dir runs/data/val-v1 --report results/train/mix-v1.md
fi
if [[ "$STAGE" == all || "$STAGE" == train ]] && [ ! -f "$OUT/modules.json" ]; then
  if ls "$OUT"/checkpoints/* >/dev/null 2>&1; then "$BIN/codesift" train "$CONFIG" --resume
  else "$BIN/codesift" train "$CONFIG"; fi
  cp "$OUT/metrics.jsonl" "results/train/$NAME-metrics.jsonl"
fi
if [[ "$STAGE" == all || "$STAGE" == eval ]] && [ ! -f "results/train/$NAME/results.json" ]; then
  "$BIN/codesift" eval --model "$OUT" --name "$NAME" --out "results/train/$NAME" \
    --data "$EVAL_ROOT/humaneval" --data "$EVAL_ROOT/mbpp-test" --data "$EVAL_ROOT/spider-dev" --data "$EVAL_ROOT/cosqa-dev" --quiet
  others=(); for d in results/train/smollm2-135m results/train/codesift-mini results/train/smollm2-135m-mix; do
    [ -f "$d/results.json" ] && [ "$d" != "results/train/$NAME" ] && others+=("$d"); done
  "$BIN/codesift" eval --compare results/baselines/bm25 results/baselines/all-MiniLM-L6-v2 results/baselines/SmolLM2-135M-untuned \
    "${others[@]}" "results/train/$NAME" --out "results/train/compare-$NAME" --quiet
  "$BIN/python" scripts/plot_training.py "results/train/$NAME-training.png" "$NAME=results/train/$NAME-metrics.jsonl"
fi
