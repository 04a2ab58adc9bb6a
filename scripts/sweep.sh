#!/usr/bin/env bash
# A short measured sweep of one training config: runs of STEPS steps (default 40) at each setting, each
# evaluated on the mix's held-out folders (runs/data/val-v1/*, never an evaluation set). Resumable:
# finished runs are skipped.
#
#   scripts/sweep.sh CONFIG NAME KEY=VALUE[,KEY=VALUE...] ...
#   e.g. STEPS=30 scripts/sweep.sh configs/codesift-mini.yaml sweep-mini lr=2e-5 lr=6e-5 lr=1.5e-4
#
# Each setting overrides keys of CONFIG (YAML values); its run goes to runs/NAME/<setting>, its step log
# and eval to results/train/NAME/. VAL: the held-out folders to score on (default: all of runs/data/val-v1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; cd "$ROOT"
[ $# -ge 3 ] || { echo "usage: scripts/sweep.sh CONFIG NAME KEY=VALUE[,KEY=VALUE...] ..." >&2; exit 2; }
CONFIG="$1"; NAME="$2"; shift 2
BIN="$ROOT/.venv/bin"; STEPS="${STEPS:-40}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -f "$CONFIG" ] || { echo "error: config $CONFIG does not exist" >&2; exit 2; }
val=(); for d in ${VAL:-runs/data/val-v1/*/}; do val+=(--data "$d"); done
[ -d "${val[1]:-/nonexistent}" ] || { echo "error: no held-out folders (runs/data/val-v1): run codesift data mix first (scripts/train_mix.sh CONFIG NAME data)" >&2; exit 2; }
mkdir -p "results/train/$NAME"
for setting in "$@"; do
  tag="${setting//,/_}"; tag="${tag//=/}"
  out="runs/$NAME/$tag"
  if [ ! -f "$out/modules.json" ]; then
    rm -rf "$out"; mkdir -p "$out"
    "$BIN/python" - "$CONFIG" "$setting" "$STEPS" "$out" <<'PY'
import sys, yaml
config, setting, steps, out = sys.argv[1:5]
cfg = yaml.safe_load(open(config))
for item in setting.split(","):
    key, _, value = item.partition("=")
    cfg[key] = yaml.safe_load(value)   # "5e-5" stays a string here: TrainConfig reads it as a number
cfg.update(steps=int(steps), out=out, eval_every=0, save_every=0, eval_dir=None)
yaml.safe_dump(cfg, open(out + "/sweep.yaml", "w"))
PY
    "$BIN/codesift" train "$out/sweep.yaml"
  fi
  cp "$out/metrics.jsonl" "results/train/$NAME/$tag-metrics.jsonl"
  [ -f "results/train/$NAME/$tag/results.json" ] || \
    "$BIN/codesift" eval --model "$out" --name "$NAME-$tag" --out "results/train/$NAME/$tag" "${val[@]}" --quiet
done
compare=(); for d in results/train/"$NAME"/*/; do [ -f "$d/results.json" ] && compare+=("$d"); done
"$BIN/codesift" eval --compare "${compare[@]}" --out "results/train/$NAME/compare" --quiet
