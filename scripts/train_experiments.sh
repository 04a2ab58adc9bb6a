#!/usr/bin/env bash
# The training experiments of EXPERIMENTS.md, end to end and resumable: run it again after an
# interruption and finished stages are skipped, an interrupted training continues from its checkpoint.
#
#   scripts/train_experiments.sh [all|main|ablation]        (default: all)
#
# Needs the mined corpus (scripts/build_corpus.sh -> work/corpus/pairs.jsonl) and the venv (scripts/setup.sh).
# Writes runs/ (models, checkpoints; git-ignored) and results/train/ (metrics, eval results, plots; committed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAGE="${1:-all}"
case "$STAGE" in all|main|ablation) ;; *) echo "error: unknown stage '$STAGE': use all, main or ablation" >&2; exit 2 ;; esac
BIN="$ROOT/.venv/bin"
EVAL_ROOT="${EVAL_ROOT:-$ROOT/../shared/data/retrieval}"
CORPUS="${CORPUS:-work/corpus/pairs.jsonl}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

[ -f "$CORPUS" ] || { echo "error: $CORPUS missing: run scripts/build_corpus.sh first" >&2; exit 2; }
mkdir -p runs/data results/train
if [ ! -s runs/data/nl2code.jsonl ]; then
  # the text->code rows of the mined, decontaminated corpus (MBPP train included)
  "$BIN/python" - "$CORPUS" runs/data/nl2code.jsonl <<'PY'
import json, sys
src, dst = sys.argv[1:3]
with open(src, encoding="utf-8") as f, open(dst + ".tmp", "w", encoding="utf-8") as out:
    n = sum(out.write(line) > 0 for line in f if json.loads(line)["task"] == "nl2code")
import os; os.replace(dst + ".tmp", dst)
print(f"{n} nl2code pairs -> {dst}")
PY
fi

train() {  # CONFIG OUT: train (or resume) unless the final model is already saved
  local config="$1" out="$2"
  if [ -f "$out/modules.json" ]; then echo "== $out: trained"; return; fi
  if [ -d "$out/checkpoints" ] && ls "$out/checkpoints" | grep -q .; then
    "$BIN/codesift" train "$config" --resume
  else
    "$BIN/codesift" train "$config"
  fi
}

evaluate() {  # MODEL NAME OUT DATASET...: codesift eval unless OUT/results.json exists
  local model="$1" name="$2" out="$3"; shift 3
  if [ -f "$out/results.json" ]; then echo "== $out: evaluated"; return; fi
  local data=(); for d in "$@"; do data+=(--data "$EVAL_ROOT/$d"); done
  "$BIN/codesift" eval --model "$model" --name "$name" --out "$out" "${data[@]}" --quiet
}

if [ "$STAGE" = all ] || [ "$STAGE" = main ]; then
  train configs/smollm2-135m.yaml runs/smollm2-135m
  cp runs/smollm2-135m/metrics.jsonl results/train/smollm2-135m-metrics.jsonl
  evaluate runs/smollm2-135m SmolLM2-135M-tuned results/train/smollm2-135m humaneval mbpp-test spider-dev cosqa-dev
  "$BIN/codesift" eval --compare results/baselines/SmolLM2-135M-untuned results/baselines/all-MiniLM-L6-v2 \
    results/baselines/bm25 results/train/smollm2-135m --out results/train/compare-main --quiet
  "$BIN/python" scripts/plot_training.py results/train/smollm2-135m-training.png \
    "SmolLM2-135M=results/train/smollm2-135m-metrics.jsonl"
fi

if [ "$STAGE" = all ] || [ "$STAGE" = ablation ]; then
  for p in lasttoken mean latent-attention; do
    train "configs/ablation-$p.yaml" "runs/ablation-$p"
    cp "runs/ablation-$p/metrics.jsonl" "results/train/ablation-$p-metrics.jsonl"
    evaluate "runs/ablation-$p" "ablation-$p" "results/train/ablation-$p" humaneval mbpp-test
  done
  "$BIN/codesift" eval --compare results/train/ablation-lasttoken results/train/ablation-mean \
    results/train/ablation-latent-attention --out results/train/compare-ablation --quiet
  "$BIN/python" scripts/plot_training.py results/train/ablation-training.png \
    "last-token=results/train/ablation-lasttoken-metrics.jsonl" "mean=results/train/ablation-mean-metrics.jsonl" \
    "latent attention=results/train/ablation-latent-attention-metrics.jsonl"
fi
