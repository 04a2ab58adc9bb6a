#!/usr/bin/env bash
# Mine commit message -> diff pairs (nl2code) from the git history of public repositories, each pinned
# at the commit recorded in DATA.md, decontaminated against the evaluation sets.
#
#   scripts/build_commit_pairs.sh [OUT_DIR]        (default: work/commits)
#
# MIRRORS: a folder holding OWNER+NAME/repo git directories (clones or bare mirrors; default /work/.mirror).
# Environment: PYTHON (default: the venv's), EXCLUDE_GLOB (BEIR folders, default ../shared/data/retrieval/*).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/work/commits}"
MIRRORS="${MIRRORS:-/work/.mirror}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
EXCLUDE_GLOB="${EXCLUDE_GLOB:-$ROOT/../shared/data/retrieval/*}"

# OWNER+NAME@COMMIT (licences in DATA.md); none of SWE-bench's twelve (codesift refuses them anyway)
REPOS=(
  psf+black@8947c48ef2077c3a301b03c1e814dc2e3f78436e
  pallets+click@2c8cd3ac958a7eb316d67f2d316c27086c4c0369
  encode+httpx@ae1b9f66238f75ced3ced5e4485408435de10768
  tiangolo+typer@233009a37d35249c1e430ee1db11ed9c06a9dcc3
  Textualize+rich@42899d8a0a96b121a514516f4be9db44ff7aeaf3
  python-attrs+attrs@c1dc5dcba16ed827aa6dcad896b41a3afedb4e32
  tqdm+tqdm@f6a30fab726ab8e794a9db88b4392ce207760937
  BurntSushi+ripgrep@3fce3b5bb0236da2df6d99672afb8a719642eca7
  pydantic+pydantic@2151025aa51263f3016502b00010b78e4481eaa1
)

args=()
for spec in "${REPOS[@]}"; do
  repo="${spec%@*}"
  commit="${spec#*@}"
  [ -d "$MIRRORS/$repo/repo" ] || { echo "error: $MIRRORS/$repo/repo missing; fetch or clone ${repo/+//} there" >&2; exit 2; }
  args+=(--commits "${repo#*+}=$MIRRORS/$repo/repo@$commit")
done
for dir in $EXCLUDE_GLOB; do
  args+=(--exclude "$dir")
done
mkdir -p "$OUT"
nice -n 10 "$PYTHON" -m codesift.cli data mine "${args[@]}" -o "$OUT/pairs.jsonl" --report "$OUT/stats.md"
