"""Localization pairs (commit message -> changed chunks at the parent, with in-repo hard negatives), on small
repositories built here."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from codesift.data.chunking import Chunk, chunk_text
from codesift.data.commit_chunks import (
    ChunkPairConfig,
    changed_chunk_pairs,
    changed_lines,
    old_side_changes,
)
from codesift.data.commits import refuse_reserved, reserved_repositories
from codesift.data.decontam import jaccard
from codesift.data.mining import MineReport
from codesift.eval.bm25 import BM25Index
from codesift.testing import GitRepoBuilder as Repo

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def func(name: str, body: str) -> str:
    return f"def {name}(values):\n    '''Work on the values for {name}.'''\n{body}\n\n"


CORE = {
    "alpha": "    total = 0\n    for v in values:\n        total += v * 2\n    return total\n",
    "beta": "    if values is None:\n        raise ValueError('values')\n    return sorted(values)[0]\n",
    "gamma": "    out = []\n    for v in values:\n        out.append(str(v).strip())\n    return out\n",
    "delta": "    seen = set()\n    return [v for v in values if not (v in seen or seen.add(v))]\n",
}


def core(**changed: str) -> str:
    return "".join(func(name, changed.get(name, body)) for name, body in CORE.items())


OTHER = ("def smallest_value(values):\n    '''Return the smallest of the values, sorted first.'''\n"
         "    ordered = sorted(values)\n    return ordered[0] if ordered else None\n")


FIXED_BETA = "    if not values:\n        return None\n    return sorted(values)[0]\n"


def mine(path, **kw):
    report = MineReport()
    cfg = ChunkPairConfig(max_tokens=kw.pop("max_tokens", 60), **kw)
    pairs = changed_chunk_pairs(path, "owner/demo", cfg, report, make_index=BM25Index, reserved=set())
    return pairs, report


@pytest.fixture
def repo(tmp_path):
    r = Repo(tmp_path / "demo")
    shas = {"init": r.commit("Initial layout of the values package",
                             {"pkg/core.py": core(), "pkg/other.py": OTHER, "README.md": "# demo\n"})}
    # the one commit that makes a pair: beta's body changes (gold = beta as it was before)
    shas["fix"] = r.commit("Return None from beta for an empty list of values instead of failing",
                           {"pkg/core.py": core(beta=FIXED_BETA)})
    return r, shas


def test_gold_is_the_parent_version_of_the_changed_chunk(repo):
    r, _shas = repo
    pairs, report = mine(r.path)
    fix = [p for p in pairs if p.query.startswith("Return None from beta")]
    assert len(fix) == 1
    pair = fix[0]
    assert pair.path == "pkg/core.py" and pair.symbol == "beta" and pair.language == "python"
    assert pair.source == "owner/demo" and pair.task == "nl2code"
    assert "raise ValueError('values')" in pair.document  # the parent's code, not the fixed one
    assert "return None" not in pair.document
    parent_chunks = chunk_text(core(), "pkg/core.py", max_tokens=60)
    assert pair.document in [c.text for c in parent_chunks]  # exactly a chunk the index makes of the parent file
    assert report.commits == {"owner/demo": 2}


def test_negatives_are_in_repo_and_never_the_gold(repo):
    r, _ = repo
    pair = next(p for p in mine(r.path)[0] if p.symbol == "beta")
    assert 1 <= len(pair.negatives) <= 3
    texts = {c.text for c in chunk_text(core(), "pkg/core.py", max_tokens=60)}
    assert any("def smallest_value" in n for n in pair.negatives)  # the lexical hit of another file
    assert any(n in texts and "def beta" not in n for n in pair.negatives)  # an unchanged neighbour in the file
    for negative in pair.negatives:
        assert negative != pair.document and pair.document not in negative and negative not in pair.document
        assert jaccard(negative, pair.document) < 0.6


def test_a_copy_of_the_gold_is_not_a_negative(tmp_path):
    r = Repo(tmp_path / "demo")
    copy = func("beta", CORE["beta"]).replace("def beta", "def beta_copy")
    r.commit("Initial layout of the values package",
             {"pkg/core.py": core(), "pkg/copy.py": copy, "pkg/other.py": OTHER})
    r.commit("Return None from beta for an empty list of values instead of failing",
             {"pkg/core.py": core(beta="    if not values:\n        return None\n    return sorted(values)[0]\n")})
    pair = next(p for p in mine(r.path)[0] if p.symbol == "beta")
    assert not any("beta_copy" in n for n in pair.negatives)
    assert any("smallest_value" in n for n in pair.negatives)


def test_other_changed_chunks_of_the_commit_are_never_negatives(tmp_path):
    r = Repo(tmp_path / "demo")
    r.commit("Initial layout of the values package", {"pkg/core.py": core(), "pkg/other.py": OTHER})
    new = {n: b.replace("values", "items") for n, b in CORE.items()}
    r.commit("Rename the values argument to items in alpha, beta and gamma",
             {"pkg/core.py": core(alpha=new["alpha"], beta=new["beta"], gamma=new["gamma"]),
              "pkg/other.py": OTHER.replace("ordered[0]", "ordered[0] if values else None")})
    pairs = [p for p in mine(r.path)[0] if p.query.startswith("Rename")]
    gold = {p.document for p in pairs}
    assert len(pairs) == 3  # four chunks changed, three kept (the cap)
    for pair in pairs:
        assert not gold & set(pair.negatives)
        assert not any("smallest_value" in n for n in pair.negatives)  # other.py was touched: no lexical hit from it


def test_trivial_messages_and_commits_are_dropped(repo):
    r, _ = repo
    beta = CORE["beta"]
    r.commit("Fix typo in beta", {"pkg/core.py": core(beta=beta + "    # ok\n")})
    r.commit("Bump version to 1.2.0", {"pkg/core.py": core(beta=beta + "    # 1.2\n")})
    r.commit("Update the pinned versions of the dependencies", {"pkg/core.py": core(beta=beta + "    # pins\n")},
             author="dependabot[bot]", email="49699333+dependabot[bot]@users.noreply.github.com")
    r.commit('Revert "Return None from beta for an empty list"', {"pkg/core.py": core(beta=beta + "    # rev\n")})
    r.commit("Add the project readme with usage notes", {"README.md": "# demo\nusage\n"})
    r.commit("Add a brand new module with a helper function", {"pkg/new.py": OTHER})
    pairs, report = mine(r.path)
    assert {p.query for p in pairs} == {"Return None from beta for an empty list of values instead of failing"}
    for reason in ("typo only", "version bump", "bot author", "revert", "no source files changed"):
        assert report.dropped[f"commit: {reason}"] == 1, reason
    assert report.dropped["commit: only new files"] == 2  # the new module, and the first commit


def test_pull_request_merges_give_their_text_and_whole_change(repo):
    r, shas = repo
    r.git("checkout", "-q", "-b", "feature")
    r.commit("wip", {"pkg/core.py": core(beta=FIXED_BETA, gamma=CORE["gamma"].replace("strip()", "strip().lower()"))})
    r.git("checkout", "-q", "main")
    r.git("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from ada/feature\n\nLower-case the strings that gamma "
          "returns\n\nFixes #6", "feature")
    r.git("checkout", "-q", "-b", "other", shas["fix"])
    r.commit("Double-check alpha's total for negative values",
             {"pkg/core.py": core(alpha=CORE["alpha"] + "    # n\n", beta=FIXED_BETA)})
    r.git("checkout", "-q", "main")
    r.git("merge", "-q", "--no-ff", "-m", "Merge pull request #8 from ada/other", "other")  # no text: skipped
    pairs, report = mine(r.path)
    merged = [p for p in pairs if p.query == "Lower-case the strings that gamma returns"]
    assert len(merged) == 1 and merged[0].symbol == "gamma" and "strip().lower()" not in merged[0].document
    assert not any(p.query == "wip" for p in pairs)
    assert report.dropped["commit: merge without text"] == 1
    assert len(mine(r.path, merges=False)[0]) == len(pairs) - 1


def test_commits_over_the_file_cap_are_skipped(repo):
    r, _ = repo
    files = {f"pkg/m{i}.py": OTHER.replace("smallest_value", f"smallest_{i}") for i in range(6)}
    r.commit("Add six modules of value helpers", files)
    r.commit("Change every value helper to return zero for an empty list",
             {p: t.replace("else None", "else 0") for p, t in files.items()})
    pairs, report = mine(r.path)
    assert not any(p.query.startswith("Change every") for p in pairs)
    assert report.dropped["commit: too many files"] == 2  # adding the six, and changing them
    assert any(p.query.startswith("Change every") for p in mine(r.path, max_files=6)[0])


def test_old_side_changes_and_insertions():
    diff = (
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -3,2 +3,3 @@ def f\n-x\n-y\n+z\n"
        "@@ -10 +11 @@\n-q\n+r\n@@ -20,0 +21,2 @@\n+new\n+new\n"
        "diff --git a/b.py b/b.py\nnew file mode 100644\n--- /dev/null\n+++ b/b.py\n@@ -0,0 +1 @@\n+b\n"
    )
    assert old_side_changes(diff) == {"a.py": ([(3, 4), (10, 10)], [20])}

    def chunk(start: int, end: int) -> Chunk:
        return Chunk("a.py", "python", start, end, None, "block", "x\n" * (end - start + 1))

    spans, inserts = [(3, 4), (10, 10)], [20]
    assert changed_lines(chunk(1, 3), spans, inserts) == 1
    assert changed_lines(chunk(5, 9), spans, inserts) == 0
    assert changed_lines(chunk(18, 22), spans, inserts) == 1  # lines inserted after 20, inside the chunk
    assert changed_lines(chunk(15, 20), spans, inserts) == 0  # ... but after its last line: another chunk's start


def test_reserved_repositories_are_refused(tmp_path):
    cases = tmp_path / "localization.jsonl"
    cases.write_text(json.dumps({"repo": "tox-dev/tox", "query": "a # in a query"}) + "\n"
                     + json.dumps({"repo": "httpie/cli"}) + "\n")
    extra = tmp_path / "reserved.txt"
    extra.write_text("# reserved for the benchmark\npallets/click  # soon\nhttps://github.com/spf13/cobra.git\n")
    reserved = reserved_repositories([extra, tmp_path / "missing.txt"], cases=cases)
    assert reserved == {"tox-dev/tox", "httpie/cli", "pallets/click", "spf13/cobra"}

    mirror = tmp_path / "tox-dev+tox" / "repo"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    with pytest.raises(ValueError, match="localization benchmark"):
        refuse_reserved(mirror, reserved)
    by_remote = Repo(tmp_path / "innocent")
    by_remote.git("remote", "add", "origin", "git@github.com:Pallets/Click.git")
    with pytest.raises(ValueError, match="pallets/click"):
        refuse_reserved(by_remote.path, reserved)
    with pytest.raises(ValueError, match="httpie/cli"):
        refuse_reserved(Repo(tmp_path / "cli").path, reserved)  # no owner known: the folder name decides
    other_cli = tmp_path / "cli+cli" / "repo"  # GitHub's cli/cli is not httpie/cli
    subprocess.run(["git", "init", "-q", "--bare", str(other_cli)], check=True)
    refuse_reserved(other_cli, reserved)
    with pytest.raises(ValueError, match="localization benchmark"):
        changed_chunk_pairs(mirror, reserved=reserved)


def test_swe_bench_repositories_are_refused(tmp_path):
    r = Repo(tmp_path / "django")
    r.commit("Initial layout of the values package", {"pkg/core.py": core()})
    with pytest.raises(ValueError, match="SWE-bench"):
        changed_chunk_pairs(r.path, reserved=set())


def test_the_benchmark_cases_file_is_read_by_default():
    assert {"tox-dev/tox", "httpie/cli", "pallets/werkzeug"} <= reserved_repositories()


def test_cli_mines_changed_chunks_deduped_and_decontaminated(repo, tmp_path, tiny_bert_dir):
    from typer.testing import CliRunner

    from codesift.cli import app

    r, _ = repo
    r.commit("Make gamma skip the values that are None before converting",
             {"pkg/core.py": core(gamma=CORE["gamma"].replace("for v in values:", "for v in values:\n        if v is None:\n"
                                                               "            continue"))})
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "Make gamma skip the values that are None before converting"}) + "\n")
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "unrelated"}) + "\n")
    out = tmp_path / "pairs.jsonl"
    res = CliRunner().invoke(app, ["data", "mine", "--commits", f"owner/demo={r.path}", "--commits", f"again={r.path}",
                                   "--changed-chunks", "--chunk-model", str(tiny_bert_dir), "-o", str(out),
                                   "--exclude", str(beir)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # gamma's pairs are decontaminated (the tiny tokenizer may cut gamma in pieces), the second history deduped
    assert {row["query"] for row in rows} == {"Return None from beta for an empty list of values instead of failing"}
    assert all(row["source"] == "owner/demo" and row["negatives"] for row in rows)
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["dropped_pairs"]["decontaminated"] >= 1
    assert stats["dropped_pairs"]["duplicate"] >= 2 * len(rows)
    assert stats["negatives"]["pairs_with_negatives"] == len(rows)
    res = CliRunner().invoke(app, ["data", "mine", "--changed-chunks", "-o", str(out)])
    assert res.exit_code != 0 and "--commits" in str(res.exception)


def test_a_changed_chunk_left_out_of_the_pairs_is_not_a_negative(tmp_path):
    r = Repo(tmp_path / "demo")
    imports = "import os\nimport sys\nimport json\nimport math\n\n\n"
    r.commit("Initial layout of the values package", {"pkg/core.py": imports + core(), "pkg/other.py": OTHER})
    new = {n: b.replace("values", "items") for n, b in CORE.items()}
    r.commit("Rename the values argument to items in alpha, beta and gamma, and drop unused imports",
             {"pkg/core.py": "import os\n\n\n" + core(alpha=new["alpha"], beta=new["beta"], gamma=new["gamma"])})
    pairs = [p for p in mine(r.path)[0] if p.query.startswith("Rename")]
    assert {p.symbol for p in pairs} == {"alpha", "beta", "gamma"}  # the changed import block is not a document...
    for pair in pairs:
        assert not any("import json" in n for n in pair.negatives)  # ... nor a negative
    alpha = next(p for p in pairs if p.symbol == "alpha")
    assert any("def delta" in n for n in alpha.negatives)  # the nearest unchanged chunk instead


def test_the_snapshot_keeps_the_touched_files_first():
    from codesift.data.commit_chunks import snapshot_chunks

    class Files:
        def at(self, rev, path):
            return [Chunk(path, "python", 1, 3, None, "block", f"code of {path} " * 5)]

    paths = [f"pkg/m{i}.py" for i in range(20)] + ["tests/test_m.py", "README.md"]
    cfg = ChunkPairConfig(max_snapshot_files=5)
    hot = {"pkg/m3.py", "pkg/m17.py", "README.md"}
    snap = snapshot_chunks("HEAD", Files(), lambda rev: paths, cfg, None, hot)
    got = [c.path for c in snap.chunks]
    assert len(got) == 5 and {"pkg/m3.py", "pkg/m17.py"} <= set(got)
    assert not any(p.startswith("tests/") or p.endswith(".md") for p in got)  # source files only
    assert [c.path for c in snapshot_chunks("HEAD", Files(), lambda rev: paths, cfg, None, hot).chunks] == got
