#!/usr/bin/env bash
# Gather installed source trees under one folder of symlinks (one per language), unpacking the
# JDK's src.zip. Used by build_corpus.sh.   corpus_sources.sh OUT_SRC_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SRC="$1"
mkdir -p "$SRC"
link() {  # link NAME PATH: add a source tree if it exists
  if [[ -e "$2" ]]; then ln -sfn "$2" "$SRC/$1"; echo "source $1 -> $2"; else echo "missing $1 ($2)" >&2; fi
}
farm() {  # farm NAME TREE REL_PATH...: NAME is a folder of links to TREE's top-level entries, less the
  # REL_PATHs (benchmark repositories); a nested one's top-level entry is copied without it, since mining
  # does not follow links below a source's root
  local name=$1 tree=$2 rel top; shift 2
  if [[ ! -e "$tree" ]]; then echo "missing $name ($tree)" >&2; return; fi
  rm -rf "${SRC:?}/$name" && mkdir -p "$SRC/$name"
  for top in "$tree"/*; do ln -s "$top" "$SRC/$name/${top##*/}"; done
  for rel in "$@"; do
    top=${rel%%/*}
    [[ -e "$tree/$rel" ]] || continue
    if [[ -L "$SRC/$name/$top" ]]; then rm "$SRC/$name/$top"; [[ "$rel" == "$top" ]] || cp -a "$tree/$top" "$SRC/$name/$top"; fi
    rm -rf "${SRC:?}/$name/$rel"; echo "excluded $name/$rel (benchmark repository)" >&2
  done
  echo "source $name -> $tree (less: $*)"
}
stdlib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
purelib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
link python-stdlib "$stdlib"
# The localization benchmark's repositories are never trained on: the venv's distributions named in
# EXCLUDE_PACKAGES (their top-level modules as their RECORD lists them, and their .dist-info) are left
# out, so python-site-packages is a folder of links to the other top-level entries.
EXCLUDE_PACKAGES="${EXCLUDE_PACKAGES:-black click fastapi httpie httpx httpx2 jinja2 starlette tox werkzeug}"
site="$SRC/python-site-packages"
rm -rf "$site" && mkdir -p "$site"   # a link (older layout) or an earlier farm: only links are removed
"$PYTHON" - "$purelib" "$site" $EXCLUDE_PACKAGES <<'EOF_PY'
import os, re, sys
from importlib.metadata import distributions
from pathlib import Path
purelib, site, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
wanted = {norm(n) for n in names}
drop, keep = set(), set()
for dist in distributions(path=[str(purelib)]):  # RECORD lists the .dist-info folder too
    tops = {f.parts[0] for f in dist.files or () if f.parts} - {"..", "__pycache__"}
    (drop if norm(dist.metadata["Name"] or "") in wanted else keep).update(tops)
drop -= keep  # a folder another distribution also installs into (a namespace) stays
for entry in sorted(purelib.iterdir()):
    stem = entry.name.split("-", 1)[0] if entry.name.endswith(".dist-info") else entry.name.removesuffix(".py")
    if entry.name in drop or norm(stem) in wanted:
        print(f"excluded python-site-packages/{entry.name} (benchmark repository)", file=sys.stderr)
    else:
        os.symlink(entry, site / entry.name)
EOF_PY
echo "source python-site-packages -> $purelib (less EXCLUDE_PACKAGES: $EXCLUDE_PACKAGES)"
goroot=$(ls -d /usr/lib/go-*/src /usr/share/go-*/src 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$goroot" ]] && link go-stdlib "$(readlink -f "$goroot")"
rustsrc=$(ls -d /usr/src/rustc-*/library 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$rustsrc" ]] && link rust-std "$rustsrc"
rubylib=$(ls -d /usr/lib/ruby/[0-9]* 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$rubylib" ]] && farm ruby-stdlib "$rubylib" bundler/vendor/thor   # rails/thor: a held-out set
farm node-libs /usr/share/nodejs axios   # axios/axios: a localization benchmark repository
link php-libs /usr/share/php
link lua-libs /usr/share/lua
srczip=$(ls /usr/lib/jvm/*/lib/src.zip 2>/dev/null | sort -V | tail -1 || true)
if [[ -n "$srczip" ]]; then
  if [[ ! -d "$SRC/java-jdk" ]]; then
    mkdir -p "$SRC/java-jdk"
    # the class library proper; skip the demo/sample modules
    (cd "$SRC/java-jdk" && unzip -q -o "$(readlink -f "$srczip")" 'java.base/*' 'java.desktop/*' 'java.sql/*' 'java.net.http/*' 'java.xml/*' 'java.logging/*' 'java.management/*' || true)
  fi
  echo "source java-jdk -> $srczip"
else
  echo "missing java-jdk (src.zip)" >&2
fi
