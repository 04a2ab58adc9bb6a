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
stdlib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
purelib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
link python-stdlib "$stdlib"
link python-site-packages "$purelib"
goroot=$(ls -d /usr/lib/go-*/src /usr/share/go-*/src 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$goroot" ]] && link go-stdlib "$(readlink -f "$goroot")"
rustsrc=$(ls -d /usr/src/rustc-*/library 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$rustsrc" ]] && link rust-std "$rustsrc"
rubylib=$(ls -d /usr/lib/ruby/[0-9]* 2>/dev/null | sort -V | tail -1 || true)
[[ -n "$rubylib" ]] && link ruby-stdlib "$rubylib"
link node-libs /usr/share/nodejs
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
