"""benchmarks/localization.py on a small repository built here: cases mined from history, ranks at the parent."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from codesift.testing import GitRepoBuilder

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("localization_bench", ROOT / "benchmarks" / "localization.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = 'def parse_config(path):\n    """Read a config file."""\n    with open(path) as fh:\n        return fh.read()\n'
STACK = "class Stack:\n    def push(self, item):\n        self.items.append(item)\n"
HTTP = "def fetch_page(url):\n    return urlopen(url).read()\n"


@pytest.fixture
def history(tmp_path):
    repo = GitRepoBuilder(tmp_path / "demo")
    shas = {"init": repo.commit("Initial layout of the demo package", {"pkg/config.py": CONFIG, "pkg/stack.py": STACK})}
    shas["http"] = repo.commit("Add a page fetcher for remote configs", {"pkg/http.py": HTTP})
    shas["fix"] = repo.commit(
        "Handle empty config files in parse_config\n\nReading an empty config file raised an error.",
        {"pkg/config.py": CONFIG.replace("fh.read()", "fh.read() or ''"),
         "tests/test_config.py": "def test_x():\n    pass\n"},
    )
    shas["typo"] = repo.commit("Fix typo in the stack module", {"pkg/stack.py": STACK + "# ok\n"})
    shas["big"] = repo.commit("Touch every module of the package at once", {
        "pkg/stack.py": STACK + "# big\n", "pkg/http.py": HTTP + "# big\n",
        **{f"pkg/m{i}.py": f"def f{i}():\n    return {i}\n" for i in range(4)}})
    return repo, shas


def test_mine_cases_keeps_meaningful_commits_with_files_at_the_parent(history):
    bench = load_benchmark()
    repo, shas = history
    cases = bench.mine_cases("demo", repo.path, per_repo=10)
    by_commit = {c["commit"]: c for c in cases}
    # init has no parent, http only adds a file, typo is skipped, big changes 6 files
    assert set(by_commit) == {shas["fix"]}
    case = by_commit[shas["fix"]]
    assert case["parent"] == shas["http"] and case["files"] == ["pkg/config.py"] and case["added"] == []
    assert case["query"].startswith("Handle empty config files in parse_config")
    assert len(bench.mine_cases("demo", repo.path, per_repo=10, max_files=6)) == 2


def test_mine_refuses_swe_bench(tmp_path):
    bench = load_benchmark()
    repo = GitRepoBuilder(tmp_path / "xarray")
    repo.commit("Initial layout of the demo package", {"a.py": CONFIG})
    with pytest.raises(ValueError, match="SWE-bench"):
        bench.mine_cases("xarray", repo.path, per_repo=5)


def test_run_indexes_the_parent_and_ranks_files(history, tmp_path, tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    bench = load_benchmark()
    repo, _shas = history
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps(bench.mine_cases("demo", repo.path, per_repo=10)[0]) + "\n")
    out = tmp_path / "result.json"
    args_list = ["run", "--cases", str(cases), "--repo", f"demo={repo.path}", "--model", str(tiny_qwen_dir),
                 "--work", str(tmp_path / "work"), "--out", str(out)]
    result = bench.run(bench.parse_args(args_list), embedder=Embedder(str(tiny_qwen_dir)))
    assert json.loads(out.read_text())["cases"] == 1 == result["cases"]
    row = result["rows"][0]
    assert row["ranks"]["bm25"] == 1  # "parse_config" and "config" only occur in pkg/config.py
    assert set(row["ranks"]) == {"bm25", "dense", "hybrid"}
    assert result["summary"]["bm25"]["acc@1"] == 1.0
    # the work tree was at the parent: the fix is not in it, the file added before it is
    work = tmp_path / "work" / "demo"
    assert "or ''" not in (work / "pkg" / "config.py").read_text() and (work / "pkg" / "http.py").exists()
    for mode in ("dense", "hybrid"):
        assert set(row["top"][mode]) <= {"pkg/config.py", "pkg/stack.py", "pkg/http.py"}
    again = bench.run(bench.parse_args([*args_list, "--resume"]), embedder=Embedder(str(tiny_qwen_dir)))
    assert again["rows"] == result["rows"]  # nothing re-run: the case was already in --out
    assert again["timing"]["demo"]["index_s"] == result["timing"]["demo"]["index_s"]


def test_summary_counts_hits_at_k():
    bench = load_benchmark()
    rows = [{"ranks": {"bm25": 1}}, {"ranks": {"bm25": 4}}, {"ranks": {"bm25": None}}, {"ranks": {"bm25": 7}}]
    s = bench.summarize(rows, ("bm25",))["bm25"]
    assert (s["acc@1"], s["acc@5"], s["acc@10"]) == (0.25, 0.5, 0.75)
    assert s["mrr@10"] == pytest.approx((1 + 1 / 4 + 1 / 7) / 4, abs=1e-4)
    assert bench.first_rank(["a", "b", "c"], ["c", "b"]) == 2 and bench.first_rank(["a"], ["z"]) is None


def test_ranker_variants_are_reported_beside_the_headline(history, tmp_path, tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    bench = load_benchmark()
    repo, _ = history
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps(bench.mine_cases("demo", repo.path, per_repo=10)[0]) + "\n")
    args = bench.parse_args(["run", "--cases", str(cases), "--repo", f"demo={repo.path}", "--model", str(tiny_qwen_dir),
                             "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
                             "--modes", "bm25", "--rankers", "chunks,no-tests,votes,subject"])
    result = bench.run(args, embedder=Embedder(str(tiny_qwen_dir)))
    assert set(result["summary"]) == {"bm25", "no-tests/bm25", "votes/bm25", "subject/bm25"}
    top = result["rows"][0]["top"]
    assert not any(p.startswith("tests/") for p in top["no-tests/bm25"])
    bad = bench.parse_args(["run", "--cases", str(cases), "--repo", f"demo={repo.path}", "--rankers", "nope"])
    with pytest.raises(SystemExit, match="unknown"):
        bench.run(bad, embedder=Embedder(str(tiny_qwen_dir)))


def test_combine_joins_runs_and_recomputes_the_summary(tmp_path):
    bench = load_benchmark()

    def part(name, ranks, model="m"):
        rows = [{"repo": name, "commit": str(i), "files": ["a"], "ranks": {"bm25": r}, "query_truncated": False,
                 "top": {}} for i, r in enumerate(ranks)]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"model": model, "rankers": ["chunks"], "cases_file": "c.jsonl", "wall_s": 1.0,
                                    "summary": bench.summarize(rows, ("bm25",)), "timing": {name: {}},
                                    "command": "x", "rows": rows}))
        return str(path)

    out = tmp_path / "all.json"
    result = bench.combine(bench.parse_args(["combine", part("a", [1, None]), part("b", [3, 1]), "--out", str(out)]))
    assert result["cases"] == 4 and result["summary"]["bm25"]["acc@1"] == 0.5 and result["summary"]["bm25"]["acc@5"] == 0.75
    assert set(result["per_repo"]) == {"a", "b"} and json.loads(out.read_text())["cases"] == 4
    with pytest.raises(SystemExit, match="different models"):
        bench.combine(bench.parse_args(["combine", part("a", [1]), part("c", [1], model="other"), "--out", str(out)]))


def test_tooling_messages_and_files_outside_the_library_make_no_case(tmp_path):
    bench = load_benchmark()
    repo = GitRepoBuilder(tmp_path / "demo")
    repo.commit("Initial layout of the demo package", {"lib/app.js": "function a() {}\n", "examples/x/index.js": "a()\n"})
    repo.commit("chore(deps): update the router package", {"lib/app.js": "function a() { return 1 }\n"})
    repo.commit("Run the linter over the whole library", {"lib/app.js": "function a() { return 2 }\n"})
    repo.commit("Fix the search example for the new client", {"examples/x/index.js": "a(1)\n"})
    keep = repo.commit("Return the listen server from app.listen", {"lib/app.js": "function a() { return 3 }\n",
                                                                     "examples/x/index.js": "a(2)\n"})
    cases = bench.mine_cases("demo", repo.path, per_repo=10)
    assert [c["commit"] for c in cases] == [keep] and cases[0]["files"] == ["lib/app.js"]


GO_SERVER = ('package server\n\n// ListenAndServe starts the HTTP server on the given address.\n'
             'func ListenAndServe(addr string) error {\n\treturn startListener(addr)\n}\n')
JS_ROUTER = ("// Match a request path against the registered route patterns.\n"
             "function matchRoute(routes, path) {\n  return routes.find((r) => r.pattern.test(path));\n}\n"
             "module.exports = { matchRoute };\n")
RS_WALK = ("/// Walk a directory tree, skipping hidden entries.\n"
           "pub fn walk_tree(root: &Path) -> Vec<PathBuf> {\n    visit(root).collect()\n}\n")


def test_run_works_on_go_javascript_and_rust_files(tmp_path, tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    bench = load_benchmark()
    repo = GitRepoBuilder(tmp_path / "poly")
    repo.commit("Initial layout of the polyglot demo", {"server/server.go": GO_SERVER, "lib/router.js": JS_ROUTER,
                                                        "src/walk.rs": RS_WALK})
    repo.commit("Make matchRoute ignore a trailing slash in the path",
                {"lib/router.js": JS_ROUTER.replace("test(path)", "test(path.replace(/\\/$/, ''))")})
    repo.commit("Return the listener error from ListenAndServe unchanged",
                {"server/server.go": GO_SERVER.replace("return startListener(addr)", "err := startListener(addr)\n\treturn err")})
    repo.commit("walk_tree: skip hidden directories as well as hidden files",
                {"src/walk.rs": RS_WALK.replace("collect()", "filter(not_hidden).collect()")})
    mined = bench.mine_cases("poly", repo.path, per_repo=10)
    assert sorted(c["files"] for c in mined) == [["lib/router.js"], ["server/server.go"], ["src/walk.rs"]]
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(json.dumps(c) + "\n" for c in mined))
    args = ["run", "--cases", str(cases), "--repo", f"poly={repo.path}", "--model", str(tiny_qwen_dir),
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"), "--modes", "bm25"]
    result = bench.run(bench.parse_args(args), embedder=Embedder(str(tiny_qwen_dir)))
    assert [r["ranks"]["bm25"] for r in result["rows"]] == [1, 1, 1]  # each name occurs in its own file only
    # one index per model under --work (a second model re-uses the work tree, not the index)
    assert (tmp_path / "work" / f"poly.{bench.model_slug(str(tiny_qwen_dir))}.index").is_dir()
    assert bench.model_slug("a/model") != bench.model_slug("b/model")
