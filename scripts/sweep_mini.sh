#!/usr/bin/env bash
# The learning-rate sweep behind configs/codesift-mini.yaml: short runs (STEPS, default 40) of the same
# config at each LR, each evaluated on the mix's held-out folders (runs/data/val-v1/*, never an
# evaluation set). Resumable: finished runs are skipped.   scripts/sweep_mini.sh [LR ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; cd "$ROOT"
BIN="$ROOT/.venv/bin"; STEPS="${STEPS:-40}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LRS=("$@"); [ ${#LRS[@]} -gt 0 ] || LRS=(2e-5 5e-5 1.5e-4)
val=(); for d in runs/data/val-v1/*/; do val+=(--data "$d"); done
[ ${#val[@]} -gt 0 ] || { echo "error: runs/data/val-v1 missing: run codesift data mix first (scripts/train_mini.sh data)" >&2; exit 2; }
mkdir -p results/train/sweep-mini
for lr in "${LRS[@]}"; do
  out="runs/sweep-mini/lr$lr"
  if [ ! -f "$out/modules.json" ]; then
    rm -rf "$out"; mkdir -p "$out"
    "$BIN/python" - "$lr" "$STEPS" "$out" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open("configs/codesift-mini.yaml"))
cfg.update(lr=float(sys.argv[1]), steps=int(sys.argv[2]), out=sys.argv[3], eval_every=0, save_every=0, eval_dir=None)
yaml.safe_dump(cfg, open(sys.argv[3] + "/sweep.yaml", "w"))
PY
    "$BIN/codesift" train "$out/sweep.yaml"
  fi
  cp "$out/metrics.jsonl" "results/train/sweep-mini/lr$lr-metrics.jsonl"
  [ -f "results/train/sweep-mini/lr$lr/results.json" ] || \
    "$BIN/codesift" eval --model "$out" --name "mini-lr$lr" --out "results/train/sweep-mini/lr$lr" "${val[@]}" --quiet
done
"$BIN/codesift" eval --compare results/train/sweep-mini/base-minilm results/train/sweep-mini/lr*/ --out results/train/sweep-mini/compare --quiet
