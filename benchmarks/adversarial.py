"""Replay the adversarial run of issue 14 against the CLI, a live `codesift serve` and `codesift mcp`.

Each case is a hostile or careless input with the outcome a user should see (one `error:` line and
exit 2, an OpenAI-shaped 4xx, a JSON-RPC error, a repaired index ...). The script prints a table of
what happened and writes it as JSON, so that the next run can be compared with this one.

    HF_HUB_OFFLINE=1 nice python benchmarks/adversarial.py --model offline --out benchmarks/results/adversarial.json

It works in a temporary directory and runs the code on PYTHONPATH (point it at an older checkout's
``src`` to replay the cases against that). ``--only input-files`` (or any of GROUPS) replays some groups
only; write those elsewhere than the full run's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

CASES: list[dict] = []
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CODESIFT_ALLOW_FALLBACK="0")
ENV.pop("CODESIFT_MODEL", None)


def record(finding: str, name: str, expected: str, ok: bool, outcome: str, seconds: float | None = None) -> None:
    CASES.append({"finding": finding, "case": name, "expected": expected, "ok": bool(ok), "outcome": outcome[:160],
                  "seconds": None if seconds is None else round(seconds, 2)})
    print(f"{'ok  ' if ok else 'FAIL'} [{finding:>5}] {name}: {outcome[:100]}", flush=True)


def guarded(finding: str, name: str, expected: str) -> Callable:
    """Run a case function; an exception is that case's outcome, not the end of the replay."""
    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a crash of the case is what we report
            record(finding, name, expected, False, f"replay raised {type(exc).__name__}: {exc}")
    return wrap


def cli(args: list, stdin: bytes | None = None, env: dict | None = None, cwd: Path | None = None,
        timeout: float = 300, wrap: list | None = None) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, seconds) of `codesift ARGS` in a subprocess (bytes args allowed), run
    under the command ``wrap`` when given."""
    t0 = time.perf_counter()
    proc = subprocess.run([*(wrap or []), sys.executable, "-m", "codesift.cli", *args], input=stdin,
                          capture_output=True, env=env or ENV, cwd=cwd, timeout=timeout)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"),
            time.perf_counter() - t0)


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return lines[-1] if lines else (err.strip().splitlines() or ["(no stderr)"])[-1]


def one_error(code: int, err: str, *needles: str) -> bool:
    """The documented failure: exit 2, one `error:` line holding the needles, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return code == 2 and len(lines) == 1 and "Traceback" not in err and all(n in lines[0] for n in needles)


def expect_error(finding: str, name: str, args: list, *needles: str, **kw) -> None:
    @guarded(finding, name, "exit 2, one error: line, no traceback")
    def _() -> None:
        code, _, err, s = cli(args, **kw)
        record(finding, name, "exit 2, one error: line, no traceback", one_error(code, err, *needles),
               f"exit {code}: {error_line(err)}" + (" (traceback)" if "Traceback" in err else ""), s)


def make_tree(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "src/conf.py").write_text("def parse_config(path):\n    return open(path).read()\n")
    (root / "src/stack.py").write_text("class Stack:\n    def push(self, item):\n        self.items.append(item)\n")
    (root / "src/gruss.py").write_bytes('def gruss(name):\n    return "Grüße, " + name  # café über\n'
                                        .encode("latin-1"))
    (root / "src/blob.py").write_bytes(bytes((i * 7919 + 13) % 224 + 32 for i in range(20_000)))
    (root / "src" / "odd\tname.py").write_text("def odd_tabbed_name():\n    return 1\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- CLI
def cli_cases(work: Path, model: str) -> Path:
    repo = work / "repo"
    make_tree(repo)
    expect_error("1", "embed $'caf\\xe9'", ["embed", b"caf\xe9", "--model", model], "not valid UTF-8")
    expect_error("1", "urandom | embed", ["embed", "--model", model], "stdin", stdin=os.urandom(3000))
    expect_error("10", "embed --input DIRECTORY", ["embed", "--input", str(work), "--model", model], "directory")
    expect_error("10", "embed -o /dev/full", ["embed", "x", "-o", "/dev/full", "--model", model], "/dev/full")
    expect_error("12", "embed -o x.csv", ["embed", "x", "-o", str(work / "x.csv"), "--model", model], ".csv")
    expect_error("12", "embed --batch-tokens 0", ["embed", "x", "--batch-tokens", "0", "--model", model],
                 "--batch-tokens")
    expect_error("12", "embed ''", ["embed", "", "--model", model], "empty")

    @guarded("10", "embed --device cuda", "exit 2 without CUDA (exit 0 with it), no traceback")
    def _() -> None:
        code, _, err, s = cli(["embed", "x", "--device", "cuda", "--model", model])
        record("10", "embed --device cuda", "exit 2 without CUDA (exit 0 with it), no traceback",
               (code == 0 or one_error(code, err)) and "Traceback" not in err, f"exit {code}: {error_line(err)}", s)

    @guarded("2", "index a tree with a file name that is not UTF-8", "exit 0, the file skipped with a reason")
    def _() -> None:
        with open(os.path.join(os.fsencode(repo / "src"), b"bad_\xff.py"), "wb") as fh:
            fh.write(b"def f(): pass\n")
        env = dict(ENV, CODESIFT_MODEL=model)  # finding 5: the model comes from the environment
        code, out, err, s = cli(["index", str(repo), "--json"], env=env)
        report = json.loads(out) if code == 0 else {}
        skipped = report.get("skipped", {})
        ok = code == 0 and any("not valid UTF-8" in v for v in skipped.values()) and report.get("chunks_total", 0) >= 3
        record("2", "index a tree with a file name that is not UTF-8", "exit 0, the file skipped with a reason", ok,
               f"exit {code}: skipped {sorted(skipped)}" if code == 0 else f"exit {code}: {error_line(err)}", s)
        record("12", "a binary blob is skipped as binary", "reason 'binary'", skipped.get("src/blob.py") == "binary",
               f"reason {skipped.get('src/blob.py')!r}")

    @guarded("5", "CODESIFT_MODEL=... index records the loaded model", "status names the model that was loaded")
    def _() -> None:
        code, out, err, s = cli(["status", str(repo), "--json"])
        got = json.loads(out)["model"] if code == 0 else error_line(err)
        from codesift.model.loading import canonical_model_name

        want = canonical_model_name(model)  # "offline" is the shipped codesift-mini
        record("5", "CODESIFT_MODEL=... index records the loaded model", "status names the model that was loaded",
               got == want or Path(got) == Path(model).resolve(), f"model {got!r}", s)
        code, _, err, s = cli(["search", "parse config", str(repo)])
        record("5", "search later without CODESIFT_MODEL", "exit 0", code == 0, f"exit {code}: {error_line(err)}", s)
        code, _, err, s = cli(["index", str(repo), "--model", model])
        record("5", "index --model with the same model (an alias)", "exit 0", code == 0,
               f"exit {code}: {error_line(err)}", s)

    expect_error("1", "search $'caf\\xe9'", ["search", b"caf\xe9", str(repo)], "query")
    expect_error("12", "search --dense-weight nan", ["search", "parse", str(repo), "--dense-weight", "nan"], "nan")
    expect_error("12", "search --rrf-k inf", ["search", "parse", str(repo), "--rrf-k", "inf"], "inf")

    @guarded("12", "piped search output with a tab in a path", "the tab escaped as \\t")
    def _() -> None:
        code, out, err, s = cli(["search", "odd tabbed name", str(repo), "--mode", "bm25"])
        lines = out.splitlines()
        ok = code == 0 and all(len(ln.split("\t")) == 3 for ln in lines) and any("odd\\tname" in ln for ln in lines)
        record("12", "piped search output with a tab in a path", "the tab escaped as \\t", ok,
               f"exit {code}: {lines[:1]}", s)

    @guarded("12", "a Latin-1 file is read as Western text", "the snippet holds 'Grüße'")
    def _() -> None:
        code, out, err, s = cli(["search", "gruss", str(repo), "--mode", "bm25", "--json"])
        snippet = next((h["snippet"] for h in json.loads(out) if h["path"] == "src/gruss.py"), "") if code == 0 else ""
        record("12", "a Latin-1 file is read as Western text", "the snippet holds 'Grüße'", "Grüße" in snippet,
               f"snippet {snippet.splitlines()[1:2]}", s)
    return repo


def index_damage_cases(work: Path, repo: Path, model: str) -> None:
    index_dir = repo / ".codesift"

    @guarded("3", "the index rolled back to an older copy", "status stale (consistent); index catches up")
    def _() -> None:
        import sqlite3

        saved = work / "index-save.sqlite"
        saved.unlink(missing_ok=True)
        src, dst = sqlite3.connect(index_dir / "manifest.sqlite"), sqlite3.connect(saved)
        src.backup(dst)  # the index is one SQLite file: manifest and chunks travel together
        src.close(), dst.close()
        (repo / "src/later.py").write_text("def tokenize_later_words(text):\n    return text.split()\n")
        cli(["index", str(repo)])
        from codesift.index import query_server

        query_server.stop(index_dir)  # it holds the file open: replace the file under no reader
        for p in index_dir.glob("manifest.sqlite*"):
            p.unlink()
        shutil.copy2(saved, index_dir / "manifest.sqlite")
        code, out, err, s = cli(["status", str(repo), "--json"])
        st = json.loads(out) if code == 0 else {}
        ok = code == 0 and st.get("problem") is None and st.get("staleness", {}).get("added") == 1
        record("3", "status over a rolled-back index", "exit 0, no problem, 1 file added (stale)", ok,
               f"exit {code}, problem {st.get('problem')}, staleness {st.get('staleness')}", s)
        code, out, err, s = cli(["index", str(repo), "--json"])
        report = json.loads(out) if code == 0 else {}
        record("3", "index over a rolled-back index", "exit 0, the one file indexed",
               code == 0 and report.get("files_changed") == 1,
               f"exit {code}: {report.get('files_changed')} files changed" if code == 0 else error_line(err), s)

    @guarded("3", "chunks missing that the manifest lists", "search exit 2 naming it; status stale; index repairs")
    def _() -> None:
        import sqlite3

        db = sqlite3.connect(index_dir / "manifest.sqlite")
        with db:
            for table in ("chunk_bags", "term_postings", "term_segments", "chunk_vectors", "chunk_symbols", "chunks"):
                db.execute(f"DELETE FROM {table}")
        db.close()
        code, _, err, s = cli(["search", "tokenize later words", str(repo)])
        record("3", "search over missing chunks", "exit 2, one line naming the mismatch",
               one_error(code, err, "manifest lists"), f"exit {code}: {error_line(err)}", s)
        code, out, err, s = cli(["status", str(repo), "--json"])
        stale = json.loads(out)["staleness"]["stale"] if code == 0 else None
        record("3", "status over missing chunks", "stale: yes", stale is True, f"exit {code}, stale {stale}", s)
        code, out, err, s = cli(["index", str(repo), "--json"])
        report = json.loads(out) if code == 0 else {}
        record("3", "index over missing chunks", "exit 0, repaired without embedding",
               code == 0 and report.get("chunks_embedded") == 0,
               f"exit {code}: {report.get('files_changed')} files written again" if code == 0 else error_line(err), s)

    @guarded("4", "a corrupt manifest.sqlite", "exit 2, one line naming --rebuild")
    def _() -> None:
        broken = work / "broken"
        shutil.copytree(repo, broken, ignore=shutil.ignore_patterns("serving.json", "query.sock"))
        for p in (broken / ".codesift").glob("manifest.sqlite*"):
            p.unlink()
        (broken / ".codesift" / "manifest.sqlite").write_bytes(b"not a database" * 300)
        code, _, err, s = cli(["search", "parse", str(broken)])
        record("4", "a corrupt manifest.sqlite", "exit 2, one line naming --rebuild", one_error(code, err, "--rebuild"),
               f"exit {code}: {error_line(err)}", s)

    @guarded("12", "a moved repository", "exit 2 naming --rebuild")
    def _() -> None:
        moved = work / "moved"
        shutil.copytree(repo, moved, ignore=shutil.ignore_patterns("serving.json", "query.sock"))
        code, _, err, s = cli(["index", str(moved)])
        record("12", "index a moved repository", "exit 2 naming --rebuild", one_error(code, err, "--rebuild"),
               f"exit {code}: {error_line(err)}", s)


# ------------------------------------------------------------------------------------ trust (issue 23)
def trust_cases(work: Path, repo: Path) -> None:
    """What a repository or another local user can plant: a shared socket folder, links, serving.json."""
    index_dir = repo / ".codesift"

    @guarded("23/2", "a socket folder another user made (0777)", "search in-process, nothing created in it")
    def _() -> None:
        deep = work / ("d" * 60) / ("e" * 60)
        shutil.copytree(index_dir, deep / ".codesift", ignore=shutil.ignore_patterns("query.*"))
        run = work / "run"
        planted = run / f"codesift-{os.getuid()}"
        planted.mkdir(parents=True)
        planted.chmod(0o777)
        env = dict(ENV, XDG_RUNTIME_DIR=str(run), CODESIFT_QUERY_SERVER="1")
        code, out, err, s = cli(["search", "parse config", "--index", str(deep / ".codesift"), "--mode", "bm25"],
                                env=env)
        ok = code == 0 and "mode 0777" in err and not any(planted.iterdir())
        record("23/2", "a socket folder another user made (0777)", "search in-process, nothing created in it", ok,
               f"exit {code}: {err.strip().splitlines()[:1]}, planted holds {len(list(planted.iterdir()))}", s)

    @guarded("23/2", "a planted log symlink to ~/.bashrc", "not followed; search in-process")
    def _() -> None:
        from codesift.index import query_server

        query_server.stop(index_dir)
        victim = work / "bashrc"
        victim.write_text("# mine\n")
        (index_dir / "query-server.log").unlink(missing_ok=True)
        (index_dir / "query-server.log").symlink_to(victim)
        try:
            code, out, err, s = cli(["search", "parse config", str(repo), "--mode", "bm25"],
                                    env=dict(ENV, CODESIFT_QUERY_SERVER="1"))
        finally:
            (index_dir / "query-server.log").unlink()
        record("23/2", "a planted log symlink to ~/.bashrc", "not followed; search in-process",
               code == 0 and victim.read_text() == "# mine\n", f"exit {code}, victim {victim.read_text()!r}", s)

    @guarded("23/3", "a committed .codesift/serving.json", "no request, key or query sent to its URL")
    def _() -> None:
        import http.server

        seen = []

        class Recorder(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        planted = index_dir / "serving.json"
        planted.write_text(json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}", "pid": 1}))
        env = dict(ENV, CODESIFT_API_KEY="secret-key")
        try:
            code_i, _, err_i, s = cli(["index", str(repo)], env=env)
            code_s, _, err_s, _ = cli(["search", "secret query", str(repo)], env=env)
        finally:
            server.shutdown()
            server.server_close()
            planted.unlink()
        record("23/3", "a committed .codesift/serving.json", "no request, key or query sent to its URL",
               code_i == 0 and code_s == 0 and not seen,
               f"index exit {code_i}, search exit {code_s}, requests seen {seen}", s)


# --------------------------------------------------------------------------- index damage (issue 23)
def hardening2_cases(work: Path, model: str) -> None:
    """Issue 23's index, input and protocol cases, on a fresh small tree."""
    import sqlite3

    repo = work / "repo23"
    make_tree(repo)
    helpers = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n\n" for i in range(60))  # not "minified"
    (repo / "src/table.py").write_text("ZEROS = [" + "0, " * 1600 + "]\n\n\n" + helpers)
    (repo / "src/deep.py").write_text("x = " + "(" * 2000 + "1" + ")" * 2000 + "\n\n\n" + helpers)
    index_dir = repo / ".codesift"

    @guarded("23/1", "a long line of repeated values", "index exit 0; search exit 0; next run rewrites nothing")
    def _() -> None:
        code, out, err, s = cli(["index", str(repo), "--model", model, "--max-tokens", "64", "--json"])
        report = json.loads(out) if code == 0 else {}
        counts = report.get("chunks_embedded", 0) + report.get("chunks_cached", 0) == report.get("chunks_total")
        code2, _, err2, _ = cli(["search", "parse config", str(repo)])
        code3, out3, _, _ = cli(["index", str(repo), "--json"])
        again = json.loads(out3).get("files_changed") if code3 == 0 else None
        record("23/1", "a long line of repeated values", "index exit 0; search exit 0; next run rewrites nothing",
               code == 0 and code2 == 0 and again == 0 and counts,
               f"index exit {code}, search exit {code2}: {error_line(err2) if code2 else 'ok'}, rerun changed {again}"
               f", embedded+cached=written {counts}", s)
        record("23", "deeply nested source", "indexed (line windows), no traceback",
               code == 0 and "Traceback" not in err and "src/deep.py" not in report.get("skipped", {}),
               f"exit {code}, traceback {'Traceback' in err}")

    expect_error("23", "search -p '[z-a]'", ["search", "parse", str(repo), "-p", "[z-a]"], "[z-a]")
    expect_error("23", "a query of zero-width spaces", ["search", "\u200b\u200b", str(repo)], "empty")
    expect_error("23", "index --max-tokens -5", ["index", str(repo), "--max-tokens", "-5"], "--max-tokens")
    expect_error("23", "index --index /proc/self", ["index", str(repo), "--index", "/proc/self", "--model", model],
                 "cannot open")

    @guarded("23", "search -p './src/**'", "the files under src/ match")
    def _() -> None:
        code, out, err, s = cli(["search", "parse config", str(repo), "-p", "./src/**", "--json"])
        paths = [h["path"] for h in json.loads(out)] if code == 0 else []
        record("23", "search -p './src/**'", "the files under src/ match", "src/conf.py" in paths,
               f"exit {code}: {paths[:2]}", s)

    empty = work / "empty23"
    empty.mkdir()
    (empty / "README").write_text("nothing to index\n")
    cli(["index", str(empty), "--model", model])
    expect_error("23", "--like on an index without chunks", ["search", "--like", "a.py:1", str(empty)], "no chunks")

    def damage_case(name: str, sql: str) -> None:
        @guarded("23/5", name, "search names `codesift index`; status problem; index repairs")
        def _() -> None:
            from codesift.index import query_server

            query_server.stop(index_dir)  # damaged on disk while no process holds it (a warm server answers from memory)
            db = sqlite3.connect(index_dir / "manifest.sqlite", isolation_level=None)
            db.execute(sql)
            db.close()
            code, _, err, s = cli(["search", "parse config", str(repo)])
            named = one_error(code, err, "codesift index")
            code, out, _, _ = cli(["status", str(repo), "--json"])
            problem = json.loads(out).get("problem") if code == 0 else None
            cli(["index", str(repo)])
            code2, out2, _, _ = cli(["status", str(repo), "--json"])
            healed = code2 == 0 and json.loads(out2).get("problem") is None
            code3, _, err3, _ = cli(["search", "parse config", str(repo)])
            record("23/5", name, "search names `codesift index`; status problem; index repairs",
                   named and bool(problem) and healed and code3 == 0,
                   f"named {named}, status problem {bool(problem)}, repaired {healed}, search after exit {code3}", s)

    damage_case("an orphan vector row", "INSERT INTO chunk_vectors SELECT 99999, vector FROM chunk_vectors LIMIT 1")
    damage_case("chunk rows gone, vectors left", "DELETE FROM chunks WHERE path = 'src/stack.py'")
    damage_case("a vector blob of the wrong length",
                "UPDATE chunk_vectors SET vector = x'00000000' WHERE seq = (SELECT MIN(seq) FROM chunk_vectors)")

    @guarded("23/5", "a malformed page", "search, status and index name --rebuild")
    def _() -> None:
        from codesift.testing import damage_table_page

        broken = work / "malformed23"
        shutil.copytree(repo, broken, ignore=shutil.ignore_patterns("query.*"))
        damage_table_page(broken / ".codesift" / "manifest.sqlite", "chunk_vectors")
        code, _, err, s = cli(["search", "parse config", str(broken)])
        searched = one_error(code, err, "--rebuild")
        code, out, _, _ = cli(["status", str(broken), "--json"])
        status = code == 0 and "--rebuild" in (json.loads(out).get("problem") or "")
        code, _, err2, _ = cli(["index", str(broken)])
        record("23/5", "a malformed page", "search, status and index name --rebuild",
               searched and status and one_error(code, err2, "--rebuild"),
               f"search {searched}, status {status}, index {error_line(err2)}", s)

    @guarded("23/4", "manifest restored from a backup under the query server", "the new file is searched")
    def _() -> None:
        from codesift.index import query_server

        env = dict(ENV, CODESIFT_QUERY_SERVER="1")
        saved = work / "backup23.sqlite"
        src, dst = sqlite3.connect(index_dir / "manifest.sqlite"), sqlite3.connect(saved)
        src.backup(dst)
        src.close(), dst.close()
        cli(["search", "parse config", str(repo), "--mode", "bm25"], env=env)  # starts the server
        for p in index_dir.glob("manifest.sqlite*"):
            p.unlink()
        shutil.copy2(saved, index_dir / "manifest.sqlite")
        (repo / "src/restored_later.py").write_text("def restored_later_words():\n    return 1\n")
        cli(["index", str(repo)])
        code, out, err, s = cli(["search", "restored later words", str(repo), "--mode", "bm25"], env=env)
        query_server.stop(index_dir)
        record("23/4", "manifest restored from a backup under the query server", "the new file is searched",
               code == 0 and out.startswith("src/restored_later.py"), f"exit {code}: {out.splitlines()[:1]}", s)

    @guarded("23", "query-server socket: empty, [1,2,3], null, deep, flood", "the same server answers after each")
    def _() -> None:
        from codesift.index import query_server

        env = dict(ENV, CODESIFT_QUERY_SERVER="1")
        cli(["search", "parse config", str(repo), "--mode", "bm25"], env=env)
        path = query_server.socket_path(index_dir)
        saved = {k: os.environ.get(k) for k in ("CODESIFT_MODEL", "CODESIFT_ALLOW_FALLBACK")}
        os.environ.pop("CODESIFT_MODEL", None)  # this process's identity must be the CLI's (ENV's)
        os.environ["CODESIFT_ALLOW_FALLBACK"] = ENV["CODESIFT_ALLOW_FALLBACK"]
        pids = []
        for payload in (b"", b"[1,2,3]\n", b"null\n", b"[" * 100_000 + b"\n", b"x" * (65 << 20)):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(30)
                sock.connect(str(path))
                try:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                    sock.recv(4096)
                except OSError:
                    pass
            try:
                pids.append(query_server.request(index_dir, "ping", start=False)["pid"])
            except Exception as exc:  # noqa: BLE001 - the server is gone: that is the outcome
                pids.append(f"{type(exc).__name__}")
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        query_server.stop(index_dir)
        record("23", "query-server socket: empty, [1,2,3], null, deep, flood", "the same server answers after each",
               len(set(pids)) == 1 and pids[0] is not None, f"pids {pids}")

    @guarded("23", "index folder: .gitignore, no stored token", ".gitignore '*'; token not in any file")
    def _() -> None:
        (repo / "src/token_run.py").write_text("def token_run():\n    return 1\n")
        cli(["index", str(repo)], env=dict(ENV, CODESIFT_STORE_TOKEN="user:hunter2-secret"))
        db = sqlite3.connect(index_dir / "manifest.sqlite", isolation_level=None)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        leaked = [f.name for f in index_dir.iterdir() if f.is_file() and b"hunter2-secret" in f.read_bytes()]
        ignore = (index_dir / ".gitignore").read_text() if (index_dir / ".gitignore").exists() else None
        record("23", "index folder: .gitignore, no stored token", ".gitignore '*'; token not in any file",
               ignore == "*\n" and not leaked, f".gitignore {ignore!r}, token in {leaked}")


# ------------------------------------------------------------------- files a user hands over (issue 23)
def write_small_beir(folder: Path) -> Path:
    """A three-document BEIR task (corpus.jsonl, queries.jsonl, qrels.tsv) in ``folder``."""
    folder.mkdir(parents=True)
    docs = {"d1": "def add(a, b): return a + b", "d2": "def read_file(path): return open(path).read()",
            "d3": "class Stack: def push(self, item): self.items.append(item)"}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                                 for k, v in docs.items()))
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "add two numbers"}\n'
                                          '{"_id": "q2", "text": "read a file"}\n')
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return folder


def read_only_mount(folder: Path) -> list | None:
    """A command prefix that runs its command with ``folder`` bind-mounted read-only in a private mount namespace
    (root writes through chmod, not through a read-only mount), or None where this process cannot do that."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        return None
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    wrap = ["unshare", "-m", "sh", "-c", script, str(folder)]
    probe = subprocess.run([*wrap, "sh", "-c", f'! touch "{folder}/.ro-probe" 2>/dev/null'], capture_output=True,
                           check=False)
    return wrap if probe.returncode == 0 and not (folder / ".ro-probe").exists() else None


def input_files_cases(work: Path, model: str) -> None:
    """Issue 23's files a user hands codesift: damaged weights, pair and BEIR files with bad text, a read-only
    index. A tiny random model (codesift.testing) keeps them cheap; ``model`` is not needed here."""
    from codesift.testing import make_tiny_decoder

    tiny = make_tiny_decoder(work / "tiny-model")
    cut = work / "model-cut"
    shutil.copytree(tiny, cut)
    weights = cut / "model.safetensors"
    searched, indexed = work / "repo-cut-search", work / "repo-cut-index"
    make_tree(searched)
    make_tree(indexed)
    code, _, err, _ = cli(["index", str(searched), "--model", str(cut)])  # search loads the model the index records
    if code != 0:
        record("23", "index with the tiny model before the damage", "exit 0", False, f"exit {code}: {error_line(err)}")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut short
    beir = write_small_beir(work / "beir-good")
    for command, args in (("embed", ["embed", "hello", "--model", str(cut)]),
                          ("index", ["index", str(indexed), "--model", str(cut)]),
                          ("search", ["search", "parse config", str(searched)]),
                          ("eval", ["eval", "--model", str(cut), "--data", str(beir), "--no-cache", "--quiet"])):
        expect_error("23", f"{command} with a truncated model.safetensors", args, str(weights), "damaged")

    pair = '{"task": "nl2code", "query": "add two numbers", "document": "def add(a, b): return a + b"}\n'
    for name, bad, needles in (
        ("a pairs file with a Latin-1 byte", pair.replace("add two", "caf\xe9 two").encode("latin-1"),
         ("pairs.jsonl:2", "0xe9", "UTF-8")),
        ('a pairs file with a lone "\\ud800"', pair.replace("add two", "cut \\ud800").encode(),
         ("pairs.jsonl:2", "surrogate", "\\ud800")),
    ):
        @guarded("23", f"train on {name}", "exit 2, one error: line naming file and line, nothing trained")
        def _(name=name, bad=bad, needles=needles) -> None:
            folder = work / f"train-{len(CASES)}"
            folder.mkdir()
            (folder / "pairs.jsonl").write_bytes(pair.encode() + bad + pair.encode())
            out = folder / "out"
            code, _, err, s = cli(["train", "--model", str(tiny), "--data", str(folder / "pairs.jsonl"),
                                   "--steps", "1", "--out", str(out)])
            untouched = not out.exists() or not any(out.iterdir())
            record("23", f"train on {name}", "exit 2, one error: line naming file and line, nothing trained",
                   one_error(code, err, *needles) and untouched,
                   f"exit {code}: {error_line(err)}" + ("" if untouched else " (wrote into --out)"), s)

    bad_corpus = write_small_beir(work / "beir-latin1")
    with open(bad_corpus / "corpus.jsonl", "ab") as fh:
        fh.write(b'{"_id": "d9", "text": "caf\xe9"}\n')
    expect_error("23", "eval --data with a Latin-1 byte in corpus.jsonl",
                 ["eval", "--model", "bm25", "--data", str(bad_corpus), "--quiet"], "corpus.jsonl:4", "0xe9")
    notes = work / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hi\n")
    expect_error("23", "eval --data a folder that is not BEIR", ["eval", "--model", "bm25", "--data", str(notes),
                 "--quiet"], str(notes), "not a BEIR folder", "corpus.jsonl, queries.jsonl and qrels.tsv")

    repo = work / "repo-read-only"
    make_tree(repo)
    index_dir = repo / ".codesift"

    @guarded("23", "a read-only index", "search exit 0; index: one line saying chmod, nothing written")
    def _() -> None:
        code, _, err, _ = cli(["index", str(repo), "--model", str(tiny)])
        if code != 0:
            record("23", "a read-only index", "search exit 0; index: one line saying chmod, nothing written", False,
                   f"indexing it first: exit {code}: {error_line(err)}")
            return
        wrap = read_only_mount(index_dir)
        if wrap is None and os.geteuid() == 0:
            record("23", "a read-only index", "search exit 0; index: one line saying chmod, nothing written", True,
                   "skipped: root writes through chmod and no read-only bind mount (unshare -m) is allowed here")
            return
        if wrap is None:  # another user: chmod is enough
            for p in [*index_dir.iterdir(), index_dir]:
                p.chmod(0o555 if p.is_dir() else 0o444)
        how = "chmod a-w" if wrap is None else "a read-only bind mount"
        before = (index_dir / "manifest.sqlite").read_bytes()
        env = dict(ENV, CODESIFT_QUERY_SERVER="0")  # a server started in the namespace would outlive this case
        try:
            code, out, err, s = cli(["search", "parse config", str(repo), "--json"], env=env, wrap=wrap)
            first = json.loads(out)[0]["path"] if code == 0 and out.strip() else None
            record("23", f"search a read-only index ({how})", "exit 0, the right file first, no error",
                   code == 0 and first == "src/conf.py" and "error" not in err,
                   f"exit {code}: first {first}" if code == 0 else f"exit {code}: {error_line(err)}", s)
            (repo / "src/conf.py").write_text("def parse_config(path):\n    return path.read_text()\n")
            code, _, err, s = cli(["index", str(repo)], env=env, wrap=wrap)
            unchanged = (index_dir / "manifest.sqlite").read_bytes() == before
            record("23", f"index into a read-only index ({how})", "exit 2, one line saying chmod, nothing written",
                   one_error(code, err, "read-only", "chmod -R u+w") and "--rebuild" not in err
                   and "corrupt" not in err and unchanged,
                   f"exit {code}: {error_line(err)}" + ("" if unchanged else " (the index changed)"), s)
        finally:
            if wrap is None:
                for p in [index_dir, *index_dir.iterdir()]:
                    p.chmod(0o755 if p.is_dir() else 0o644)


# --------------------------------------------------------------------------------------------- HTTP
def start_server(args: list, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "codesift.cli", "serve", "--port", str(port), "--log-level",
                             "warning", *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return proc, url


def post(url: str, body, timeout: float = 120) -> tuple[httpx.Response, float]:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/embeddings", content=content, headers={"content-type": "application/json"},
                   timeout=timeout, trust_env=False)
    return r, time.perf_counter() - t0


def metric(url: str, status: str) -> float:
    import re

    text = httpx.get(f"{url}/metrics", trust_env=False).text
    m = re.search(rf'codesift_requests_total{{route="/v1/embeddings",status="{status}"}} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def http_cases(work: Path, repo: Path, model: str) -> None:
    proc, url = start_server(["--model", model, "--index", str(repo / ".codesift"), "--body-timeout", "2"])
    try:
        if proc.poll() is not None:
            record("-", "serve starts", "healthy", False, proc.stderr.read().decode()[-300:])
            return

        def api(finding: str, name: str, body, want_status: int, want_code: str | None = None) -> None:
            @guarded(finding, name, f"{want_status}")
            def _() -> None:
                r, s = post(url, body)
                try:
                    code = r.json()["error"]["code"] if r.status_code >= 400 else None
                except ValueError:
                    code = "(not JSON)"
                ok = r.status_code == want_status and (want_code is None or code == want_code)
                record(finding, name, f"{want_status} {want_code or ''}".strip(), ok, f"{r.status_code} {code or ''}", s)

        api("1", 'POST {"input": "\\ud800abc"}', b'{"input": "\\ud800abc"}', 400, "invalid_text")
        api("1", "POST a list with a cut emoji", b'{"input": ["ok", "\\ud83d"]}', 400, "invalid_text")
        api("12", 'POST {"input": ""}', {"input": ""}, 400, "empty_input")
        unit = "def handler(request):\n    return request.json()\n"
        huge = (unit * (5_000_000 // len(unit) + 1))[:5_000_000]
        api("7", "POST a 5 MB input", {"input": huge}, 400, "input_too_long")
        api("7", "POST a 5 MB input with truncate", {"input": huge, "truncate": True}, 200)

        @guarded("7", "a tiny request beside a 5 MB one", "answered in under 1 s")
        def _() -> None:
            thread = threading.Thread(target=post, args=(url, {"input": huge}))  # the case: refused
            thread.start()
            time.sleep(0.3)
            r, s = post(url, {"input": "def f(): pass"})
            thread.join()
            record("7", "a tiny request beside a 5 MB one", "answered in under 1 s", r.status_code == 200 and s < 1.0,
                   f"{r.status_code} in {s:.2f} s", s)

        @guarded("6", "a client closes mid-body", "counted as 499, no 500")
        def _() -> None:
            before = metric(url, "500"), metric(url, "499")
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
                sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{")
                time.sleep(0.3)
            time.sleep(0.5)
            after = metric(url, "500"), metric(url, "499")
            record("6", "a client closes mid-body", "counted as 499, no 500",
                   after[0] == before[0] and after[1] == before[1] + 1,
                   f"500: {before[0]:g} -> {after[0]:g}, 499: {before[1]:g} -> {after[1]:g}")

        @guarded("12", "a body that stalls", "408 after the body timeout")
        def _() -> None:
            t0 = time.perf_counter()
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
                sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"in")
                reply = sock.recv(200)
            s = time.perf_counter() - t0
            record("12", "a body that stalls", "408 after the body timeout", reply.startswith(b"HTTP/1.1 408"),
                   reply.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)", s)

        @guarded("8", "/health shows no path or exception", "{'status': 'ok'} only")
        def _() -> None:
            body = httpx.get(f"{url}/health", trust_env=False).text
            record("8", "/health shows no path or exception", "{'status': 'ok'} only", str(work) not in body
                   and "Error" not in body, body)

        @guarded("23", "HTTP: slow and huge request heads", "closed within 10 s; a 8 MB header refused")
        def _() -> None:
            port = int(url.rsplit(":", 1)[1])
            t0 = time.perf_counter()
            slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(20)]
            for sock in slow:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            closed = 0
            for _ in range(30):  # a header line every half second, never the end of the head
                time.sleep(0.5)
                for sock in slow:
                    try:
                        sock.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        pass
                if time.perf_counter() - t0 > 12:
                    break
            for sock in slow:
                sock.settimeout(5)
                try:
                    closed += sock.recv(100) == b""
                except OSError:
                    closed += 1
                sock.close()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                try:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n")
                    answer = sock.recv(100)
                except OSError:
                    answer = b""
            record("23", "HTTP: slow and huge request heads", "closed within 10 s; a 8 MB header refused",
                   closed == len(slow) and not answer.startswith(b"HTTP/1.1 2"),
                   f"{closed}/{len(slow)} slow heads closed; big header: {answer[:20]!r}", time.perf_counter() - t0)

        @guarded("23", "HTTP: /v1/search with a bad glob", "400 naming the glob")
        def _() -> None:
            r = httpx.post(f"{url}/v1/search", json={"query": "parse", "path_globs": ["[z-a]"]}, timeout=120,
                           trust_env=False)
            record("23", "HTTP: /v1/search with a bad glob", "400 naming the glob",
                   r.status_code == 400 and "[z-a]" in r.text, f"{r.status_code} {r.text[:80]}")

        @guarded("9", "a served index is refreshed", "HTTP route 200; index and search work beside the server")
        def _() -> None:
            httpx.post(f"{url}/v1/search", json={"query": "parse"}, timeout=120, trust_env=False)  # opens the store
            (repo / "src/served_later.py").write_text("def served_later_words(text):\n    return text.split()\n")
            code, out, err, s = cli(["index", str(repo), "--json"])
            record("9", "codesift index while served", "exit 0 beside the server (SQLite WAL)",
                   code == 0 and json.loads(out).get("files_changed") == 1, f"exit {code}: {error_line(err)}", s)
            code, out, err, s = cli(["search", "served later words", str(repo), "--mode", "bm25"])
            record("9", "codesift search while served", "exit 0, the new file first",
                   code == 0 and out.startswith("src/served_later.py"), f"exit {code}: {out.splitlines()[:1]}", s)
            r = httpx.post(f"{url}/v1/index/refresh", timeout=120, trust_env=False)
            record("9", "POST /v1/index/refresh", "200", r.status_code == 200, f"{r.status_code}")
    finally:
        proc.terminate()
        proc.wait(60)

    @guarded("8", "serve a model that cannot load", "exits non-zero with one error: line")
    def _() -> None:
        t0 = time.perf_counter()
        proc, _ = start_server(["--model", str(work / "no" / "such-model")], timeout=60)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        err = proc.stderr.read().decode(errors="replace")
        record("8", "serve a model that cannot load", "exits non-zero with one error: line",
               code not in (0, None) and "Traceback" not in err, f"exit {code}: {error_line(err)}",
               time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- MCP
def mcp_cases(repo: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "codesift.cli", "mcp", str(repo)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)

    def send(line: str) -> None:
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    def reply(timeout: float) -> dict | None:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        return json.loads(line) if line.strip() else None

    try:
        send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "replay", "version": "1"}}}))
        reply(120)
        send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        send("this is not json")
        r = reply(10)
        record("11", "MCP: a line that is not JSON", "-32700", bool(r and r.get("error", {}).get("code") == -32700),
               json.dumps(r)[:120] if r else "no reply in 10 s")
        send('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search_code",'
             '"arguments":{"query":"\\ud800"}}}')
        r = reply(30)
        record("11", "MCP: tools/call with \\ud800 in an argument", "an answer to id 2 (an error)",
               bool(r and r.get("id") == 2 and ("error" in r or r.get("result", {}).get("isError"))),
               json.dumps(r)[:120] if r else "no reply in 30 s")
        send('{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"x":' + "[" * 100_000 + "]" * 100_000 + "}}")
        r = reply(30)
        record("23", "MCP: a 100,000-deep line", "-32700, the server lives",
               bool(r and r.get("error", {}).get("code") == -32700), json.dumps(r)[:120] if r else "no reply in 30 s")
        for bad_id in ("1.5", '{"a": 1}'):
            send('{"jsonrpc":"2.0","id":' + bad_id + ',"method":"tools/list"}')
            r = reply(30)
            record("23", f"MCP: a request with id {bad_id}", "-32600",
                   bool(r and r.get("error", {}).get("code") == -32600), json.dumps(r)[:120] if r else "no reply in 30 s")
        send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                         "params": {"name": "search_code", "arguments": {"query": "parse config"}}}))
        r = reply(300)  # the first call loads the model and opens the store: slow on a busy machine
        record("11", "MCP: a good call after the bad ones", "an answer to id 3", bool(r and r.get("id") == 3),
               "answered" if r else "no reply in 300 s")
    finally:
        proc.kill()
        proc.wait(10)


GROUPS = ("cli", "trust", "hardening2", "input-files", "mcp", "http", "damage")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="offline", help="model for every case (default: the MiniLM fallback)")
    ap.add_argument("--out", default="benchmarks/results/adversarial.json")
    ap.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                    help=f"run only these case groups ({', '.join(GROUPS)}; default: all); trust, mcp, http and "
                         "damage use cli's repository, so cli runs with them")
    args = ap.parse_args()
    import codesift

    only = set(args.only or GROUPS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codesift-adversarial-") as tmp:
        work = Path(tmp)
        repo = cli_cases(work, args.model) if only & {"cli", "trust", "mcp", "http", "damage"} else None
        if "trust" in only:
            trust_cases(work, repo)
        if "hardening2" in only:
            hardening2_cases(work, args.model)
        if "input-files" in only:
            input_files_cases(work, args.model)
        if "mcp" in only:
            mcp_cases(repo)
        if "http" in only:
            http_cases(work, repo, args.model)
        if "damage" in only:
            index_damage_cases(work, repo, args.model)
    passed = sum(c["ok"] for c in CASES)
    print(f"\n{'':4} {'#':>5}  {'case':<52} {'expected':<44} outcome")
    for c in CASES:
        print(f"{'ok' if c['ok'] else 'FAIL':<4} {c['finding']:>5}  {c['case'][:52]:<52} {c['expected'][:44]:<44} "
              f"{c['outcome'][:70]}")
    print(f"\n{passed}/{len(CASES)} cases as expected in {time.perf_counter() - started:.0f} s")
    result = {"benchmark": "adversarial", "model": args.model, "codesift": str(Path(codesift.__file__).parent),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "groups": sorted(only, key=GROUPS.index), "passed": passed, "total": len(CASES),
              "seconds": round(time.perf_counter() - started, 1),
              "cases": CASES}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
