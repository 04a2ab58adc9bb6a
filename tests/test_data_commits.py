"""Reading git history and mining commit message -> diff pairs, on small repositories built here."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from codesift.data.commits import (
    CommitConfig,
    cap_diff,
    clean_message,
    commit_pairs,
    iter_commits,
    message_skip_reason,
    open_repository,
    refuse_swe_bench,
)
from codesift.data.mining import MineReport
from codesift.testing import GitRepoBuilder as Repo

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def func(name: str, body: str = "return 1") -> str:
    return f"def {name}(x):\n    '''Compute {name}.'''\n    {body}\n"


@pytest.fixture
def repo(tmp_path) -> tuple[Repo, dict[str, str]]:
    r = Repo(tmp_path / "demo")
    shas = {}
    shas["init"] = r.commit("Initial layout of the parser package",
                            {"pkg/parse.py": func("parse"), "README.md": "# demo\n"})
    shas["feature"] = r.commit(
        "Add tokenizer for quoted strings (#12)\n\nThe parser now splits quoted strings into tokens.\n\n"
        "Signed-off-by: Ada <ada@example.com>\nCo-authored-by: Bob <bob@example.com>",
        {"pkg/tokens.py": func("tokenize", "return x.split()"), "pkg/parse.py": func("parse", "return tokenize(x)")},
    )
    shas["docs"] = r.commit("Document the tokenizer in the readme file", {"README.md": "# demo\ntokens\n"})
    shas["bot"] = r.commit("Update pinned parser dependency versions", {"pkg/deps.py": "PINS = {'a': '1.0'}\n"},
                           author="dependabot[bot]", email="49699333+dependabot[bot]@users.noreply.github.com")
    shas["bump"] = r.commit("Bump version to 1.2.0", {"pkg/version.py": "__version__ = '1.2.0'\n"})
    shas["typo"] = r.commit("Fix typo in parse docstring", {"pkg/parse.py": func("parse", "return tokenize(x)  # ok")})
    shas["revert"] = r.commit('Revert "Add tokenizer for quoted strings"', {"pkg/tokens.py": None})
    shas["tests"] = r.commit("Cover the parser with unit tests for empty input",
                             {"tests/test_parse.py": "def test_parse():\n    assert parse('') == []\n"})
    shas["big"] = r.commit("Generate a very large lookup table for parsing",
                           {"pkg/table.py": "".join(f"T{i} = {i}\n" for i in range(600))})
    shas["fix"] = r.commit("Handle empty input in parse without raising an error",
                           {"pkg/parse.py": func("parse", "return tokenize(x) if x else []")})
    return r, shas


def test_iter_commits_reads_messages_parents_and_files(repo):
    r, shas = repo
    commits = list(iter_commits(r.path))
    assert [c.sha for c in commits][::-1] == list(shas.values())  # newest first, every non-merge commit
    by_sha = {c.sha: c for c in commits}
    feature = by_sha[shas["feature"]]
    assert feature.parent == shas["init"]
    assert {f.path for f in feature.files} == {"pkg/tokens.py", "pkg/parse.py"}
    assert {f.path: f.status for f in feature.files} == {"pkg/tokens.py": "A", "pkg/parse.py": "M"}
    assert not next(f for f in feature.files if f.path == "pkg/tokens.py").existed_before
    assert feature.subject == "Add tokenizer for quoted strings (#12)"
    assert by_sha[shas["init"]].parent is None
    assert [(f.path, f.status) for f in by_sha[shas["revert"]].files] == [("pkg/tokens.py", "D")]
    assert len(list(iter_commits(r.path, max_count=2))) == 2


def test_merges_are_not_read(repo):
    r, shas = repo
    r.git("checkout", "-q", "-b", "side", shas["init"])
    side = r.commit("Side branch work on the parser module", {"pkg/side.py": func("side")})
    r.git("checkout", "-q", "main")
    r.git("merge", "-q", "--no-ff", "-m", "Merge branch 'side'", "side")
    shas_read = [c.sha for c in iter_commits(r.path)]
    assert side in shas_read and len(shas_read) == len(shas) + 1


def test_commit_pairs_keep_meaningful_source_commits_only(repo):
    r, shas = repo
    report = MineReport()
    pairs = commit_pairs(r.path, "demo", CommitConfig(), report)
    assert {p.symbol for p in pairs} == {shas["init"], shas["feature"], shas["fix"]}
    feature = next(p for p in pairs if p.symbol == shas["feature"])
    assert feature.task == "nl2code" and feature.source == "demo" and feature.language == "python"
    assert feature.query == "Add tokenizer for quoted strings\n\nThe parser now splits quoted strings into tokens."
    assert "diff --git a/pkg/parse.py b/pkg/parse.py" in feature.document
    assert "+++ b/pkg/tokens.py" in feature.document and "+    return x.split()" in feature.document
    assert not any(line.startswith("index ") for line in feature.document.splitlines())
    init = next(p for p in pairs if p.symbol == shas["init"])
    assert "README" not in init.document  # only source files are kept in the diff
    assert report.commits == {"demo": len(shas)}
    for reason in ("bot author", "version bump", "typo only", "revert", "no source files changed", "diff too large"):
        assert report.dropped[f"commit: {reason}"] >= 1, reason
    with_tests = commit_pairs(r.path, "demo", CommitConfig(include_tests=True))
    assert shas["tests"] in {p.symbol for p in with_tests}
    roomy = commit_pairs(r.path, "demo", CommitConfig(max_changed_lines=10_000, max_diff_chars=100_000))
    assert shas["big"] in {p.symbol for p in roomy}


def test_clean_message_drops_trailers_refs_and_template_noise():
    raw = (
        "Speed up the lexer (#4521) [skip ci]\n\n"
        "* Speed up the lexer\n\n* add changelog\n\n* Update lexer.py\n\n* fix lint\n\n"
        "The lexer now caches compiled patterns.\n"
        "Fixes #4500\n"
        "- [x] tests added\n"
        "<!-- describe your change -->\n\n"
        "---------\n\n"
        "Co-authored-by: Bob <bob@example.com>\n"
        "Signed-off-by: Ada <ada@example.com>"
    )
    assert clean_message(raw) == "Speed up the lexer\n\nThe lexer now caches compiled patterns."
    assert clean_message("Cache patterns\n\n* Add a pattern cache to the lexer class") == (
        "Cache patterns\n\n* Add a pattern cache to the lexer class"
    )
    assert clean_message("Fix the parser\n\nFixes: a crash when the input is empty") == (
        "Fix the parser\n\nFixes: a crash when the input is empty"
    )
    long = "Subject line here\n\n" + "\n\n".join("word " * 40 for _ in range(20))
    assert len(clean_message(long, max_chars=500)) <= 500


@pytest.mark.parametrize(
    "message, author, reason",
    [
        ("Bump actions/checkout from 3 to 4", "dependabot[bot]", "bot author"),
        ("Release 2.3.1", "Ada", "version bump"),
        ("Bump version to 2.3.1", "Ada", "version bump"),
        ('Revert "Speed up the lexer"', "Ada", "revert"),
        ("Merge branch 'main' into fix", "Ada", "merge"),
        ("Fix typos", "Ada", "typo only"),
        ("fix a typo in the docs", "Ada", "typo only"),
        ("wip", "Ada", "work in progress"),
        ("docs: Fix a few typos", "Ada", "typo only"),
        ("chore(release): 2.3.1", "Ada", "version bump"),
        ("\U0001f41b fix(cli): make multiple -e flags additive", "Ada", None),
        ("Cleanup", "Ada", "message too short"),
        ("Fix crash when parsing typed lambda arguments", "Ada", None),
        ("Release the file lock when the writer fails", "Ada", None),
    ],
)
def test_message_skip_reason(message, author, reason):
    from codesift.data.commits import Commit

    commit = Commit("0" * 40, None, author, f"{author}@example.com", 0, message)
    assert message_skip_reason(commit, clean_message(message)) == reason


def test_cap_diff_keeps_whole_hunks_with_their_headers():
    hunk = "@@ -1,2 +1,2 @@\n-a\n+b\n"
    header_x = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n"
    diff = header_x + hunk * 3 + "diff --git a/y.py b/y.py\n--- a/y.py\n+++ b/y.py\n" + hunk
    assert cap_diff(diff, 10_000) == diff
    capped = cap_diff(diff, 95)  # header 47 + hunks of 22 characters (newlines counted)
    assert capped is not None and capped.startswith("diff --git a/x.py") and capped.count("@@ -1,2") == 2
    assert len(capped) <= 95 and capped.endswith("+b")
    assert cap_diff(diff, 20) is None


@pytest.mark.parametrize("remote", ["https://github.com/pallets/flask.git", "git@github.com:django/django.git"])
def test_swe_bench_repositories_are_refused_by_remote(tmp_path, remote):
    r = Repo(tmp_path / "innocent-name")
    r.commit("Initial layout of the parser package", {"a.py": func("a")})
    r.git("remote", "add", "origin", remote)
    with pytest.raises(ValueError, match="SWE-bench"):
        open_repository(r.path)


def test_swe_bench_repositories_are_refused_by_folder(tmp_path):
    r = Repo(tmp_path / "sympy")
    r.commit("Initial layout of the parser package", {"a.py": func("a")})
    with pytest.raises(ValueError, match="sympy/sympy"):
        refuse_swe_bench(r.path)
    mirror = tmp_path / "psf+requests"
    subprocess.run(["git", "clone", "-q", "--bare", str(r.path), str(mirror / "repo")], check=True)
    with pytest.raises(ValueError, match="psf/requests"):
        open_repository(mirror / "repo")
    ok = Repo(tmp_path / "requests-toolbelt")  # a name that merely contains one is fine
    ok.commit("Initial layout of the parser package", {"a.py": func("a")})
    open_repository(ok.path)


def test_not_a_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a git repository"):
        open_repository(tmp_path)


def test_bare_mirror_gives_the_same_pairs(repo, tmp_path):
    r, _ = repo
    subprocess.run(["git", "clone", "-q", "--bare", str(r.path), str(tmp_path / "owner+demo" / "repo")], check=True)
    bare = commit_pairs(tmp_path / "owner+demo" / "repo")
    assert [p.to_json() | {"source": ""} for p in bare] == [p.to_json() | {"source": ""} for p in commit_pairs(r.path)]
    assert {p.source for p in bare} == {"owner+demo"}


def test_cli_mine_commits_with_dedupe_and_decontamination(repo, tmp_path):
    from typer.testing import CliRunner

    from codesift.cli import app
    from codesift.data.commits import commit_pairs as mine_commits

    r, shas = repo
    fix = next(p for p in mine_commits(r.path) if p.symbol == shas["fix"])
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": fix.query}) + "\n")
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "unrelated"}) + "\n")
    out = tmp_path / "pairs.jsonl"
    res = CliRunner().invoke(app, ["data", "mine", "--commits", f"demo={r.path}", "--commits", f"again={r.path}",
                                   "-o", str(out), "--exclude", str(beir)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["symbol"] for row in rows} == {shas["init"], shas["feature"]}  # fix decontaminated, copies deduped
    assert {row["source"] for row in rows} == {"demo"}
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["commits_read"] == {"demo": len(shas), "again": len(shas)}
    assert stats["dropped_pairs"]["decontaminated"] == 1 and stats["dropped_pairs"]["duplicate"] == 3


def test_cli_refuses_swe_bench_and_empty_runs(tmp_path):
    from typer.testing import CliRunner

    from codesift.cli import app

    r = Repo(tmp_path / "astropy")
    r.commit("Initial layout of the parser package", {"a.py": func("a")})
    res = CliRunner().invoke(app, ["data", "mine", "--commits", str(r.path), "-o", str(tmp_path / "p.jsonl")])
    assert res.exit_code != 0 and "SWE-bench" in str(res.exception)
    assert not (tmp_path / "p.jsonl").exists()
    res = CliRunner().invoke(app, ["data", "mine", "-o", str(tmp_path / "p.jsonl")])
    assert res.exit_code != 0 and "nothing to mine" in str(res.exception)


def test_pinned_history_reads_only_up_to_the_commit(repo, tmp_path):
    from codesift.data.commits import CommitConfig as Cfg
    from codesift.data.pipeline import mine

    r, shas = repo
    pinned = mine([], commits=[f"demo={r.path}@{shas['feature'][:12]}"], commit_cfg=Cfg())
    assert {p.symbol for p in pinned.pairs} == {shas["init"], shas["feature"]}
    assert pinned.stats["commits_read"] == {"demo": 2}
