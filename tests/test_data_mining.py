"""Mined pairs: the three tasks, filters, dedupe, per-source cap, decontamination, MBPP train, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codesift.data.decontam import Decontaminator, jaccard
from codesift.data.mbpp import load_mbpp_pairs
from codesift.data.mining import (
    TRAINING_TASKS,
    MineConfig,
    cap_per_source,
    is_boilerplate_doc,
    pairs_from_text,
    summarize_doc,
)
from codesift.data.pair import Pair
from codesift.data.pipeline import mine, stats_markdown, write_pairs

DOC = "Compute the running total of the values in a list"

# one documented function of five statements per language: (file name, text)
FIXTURES = {
    "python": ("acc.py", (f'def running_total(values):\n    """{DOC}.\n\n    Args:\n        values: numbers.\n    """\n'
                "    total = 0\n    out = []\n    for v in values:\n        total += v\n        out.append(total)\n    return out\n")),
    "go": ("acc.go", (f"package acc\n\n// RunningTotal: {DOC}.\nfunc RunningTotal(values []int) []int {{\n\ttotal := 0\n"
            "\tout := []int{}\n\tfor _, v := range values {\n\t\ttotal += v\n\t\tout = append(out, total)\n\t}\n\treturn out\n}\n")),
    "java": ("Acc.java", (f"class Acc {{\n    /**\n     * {DOC}.\n     * @param values numbers\n     */\n"
              "    static int[] runningTotal(int[] values) {\n        int total = 0;\n        int[] out = new int[values.length];\n"
              "        for (int i = 0; i < values.length; i++) {\n            total += values[i];\n            out[i] = total;\n"
              "        }\n        return out;\n    }\n}\n")),
    "rust": ("acc.rs", (f"/// {DOC}.\nfn running_total(values: &[i64]) -> Vec<i64> {{\n    let mut total = 0;\n"
              "    let mut out = Vec::new();\n    for v in values {\n        total += v;\n        out.push(total);\n    }\n    out\n}\n")),
    "javascript": ("acc.js", (f"/** {DOC}. */\nfunction runningTotal(values) {{\n  let total = 0;\n  const out = [];\n"
                    "  for (const v of values) {\n    total += v;\n    out.push(total);\n  }\n  return out;\n}\n")),
    "ruby": ("acc.rb", (f"# {DOC}.\ndef running_total(values)\n  total = 0\n  out = []\n  values.each do |v|\n"
              "    total += v\n    out << total\n  end\n  out\nend\n")),
    "php": ("acc.php", (f"<?php\n/** {DOC}. */\nfunction running_total($values) {{\n    $total = 0;\n    $out = [];\n"
             "    foreach ($values as $v) {\n        $total += $v;\n        $out[] = $total;\n    }\n    return $out;\n}\n")),
    "c": ("acc.c", (f"/* {DOC}. */\nvoid running_total(const int *values, int *out, int n) {{\n    int total = 0;\n"
           "    int i = 0;\n    for (i = 0; i < n; i++) {\n        total += values[i];\n        out[i] = total;\n    }\n    return;\n}\n")),
    "kotlin": ("Acc.kt", (f"/** {DOC}. */\nfun runningTotal(values: List<Int>): List<Int> {{\n    var total = 0\n"
                "    val out = mutableListOf<Int>()\n    for (v in values) {\n        total += v\n        out.add(total)\n    }\n    return out\n}\n")),
}

# a distinct doc per language: the same query for two documents would be deduplicated
FIXTURES = {lang: (name, text.replace(DOC, f"{DOC} in {lang}")) for lang, (name, text) in FIXTURES.items()}


def write_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in FIXTURES.values():
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("language", sorted(FIXTURES))
def test_pairs_per_language(language):
    name, text = FIXTURES[language]
    pairs = pairs_from_text(text, language, "fixture", name)
    by_task = {p.task: p for p in pairs}
    assert set(by_task) == {"nl2code", "code2nl", "code2completion"}, language
    nl = by_task["nl2code"]
    assert DOC in nl.query and "@param" not in nl.query and "Args" not in nl.query
    assert DOC not in nl.document  # the documentation is removed from the code
    assert "total" in nl.document and nl.language == language and nl.source == "fixture"
    rev = by_task["code2nl"]
    assert (rev.query, rev.document) == (nl.document, nl.query)
    comp = by_task["code2completion"]
    full = comp.query + "\n" + comp.document
    assert comp.query.strip() and comp.document.strip()
    assert "total" in comp.query and ("return" in comp.document or "out" in comp.document)
    assert full.count("\n") >= 6
    # the cut falls on a statement boundary: the rest starts with a whole line of code
    assert comp.document.lstrip().split()[0] in {"total", "out", "for", "return", "int", "let", "const", "val", "var",
                                                "$out", "$total", "foreach", "values.each", "i", "int[]", "}"}


def test_all_tasks_are_training_tasks():
    pairs = [p for lang, (n, t) in FIXTURES.items() for p in pairs_from_text(t, lang, "s", n)]
    assert {p.task for p in pairs} <= set(TRAINING_TASKS)


@pytest.mark.parametrize(
    "doc",
    ["TODO: write docs", "@param x the value", ":param x: the value", "Copyright 2020 ACME Inc. All rights reserved.",
     "Auto-generated by the build, do not edit"],
)
def test_boilerplate_docs_are_dropped(doc):
    summary = summarize_doc(doc)
    assert not summary or is_boilerplate_doc(summary)  # parameter-only docs have no summary at all
    text = f'def f(values):\n    """{doc}"""\n    total = 0\n    for v in values:\n        total += v * 2\n    return total\n'
    assert not [p for p in pairs_from_text(text, "python", "s") if p.task == "nl2code"]


def test_summary_is_first_paragraph_without_markup():
    assert summarize_doc("<summary>Opens the <see cref=\"T:System.IO.File\"/> for reading.</summary>") == (
        "Opens the System.IO.File for reading."
    )
    assert summarize_doc("Returns the {@code List} of items.\n\n@return items") == "Returns the List of items."
    assert summarize_doc("First line\ncontinues here.\n\nSecond paragraph.") == "First line continues here."


def test_short_docs_and_code_are_filtered():
    text = 'def f(x):\n    """Adds."""\n    return x\n'
    assert pairs_from_text(text, "python", "s") == []


def test_mine_dedupes_caps_and_counts(tmp_path):
    a = write_tree(tmp_path / "a")
    b = write_tree(tmp_path / "b")  # an identical copy: every pair is a duplicate
    result = mine([a, b], MineConfig())
    assert result.stats["dropped_pairs"]["duplicate"] == len(result.pairs)
    assert {p.source for p in result.pairs} == {"a"}
    assert len({p.language for p in result.pairs}) == len(FIXTURES)
    counts = result.stats["by_task"]
    assert counts["nl2code"] == counts["code2nl"] == len(FIXTURES)
    assert result.stats["lengths"]["nl2code"]["query_chars"]["p50"] >= len(DOC)
    md = stats_markdown(result.stats)
    assert "| python |" in md and "p5 / p50 / p95" in md

    capped = mine([a], MineConfig(max_per_source=2))
    assert all(v <= 2 for v in capped.stats["by_task"].values())
    assert capped.stats["dropped_pairs"]["per-source cap"] == len(result.pairs) - len(capped.pairs)


def test_cap_is_per_source_and_task_and_seeded():
    pairs = [Pair("nl2code", f"q{i}", f"d{i}", "python", "big" if i < 90 else "small") for i in range(100)]
    capped = cap_per_source(pairs, 10, seed=1)
    assert sum(p.source == "big" for p in capped) == 10 and sum(p.source == "small" for p in capped) == 10
    assert capped == cap_per_source(pairs, 10, seed=1)
    assert capped != cap_per_source(pairs, 10, seed=2)


def _beir(folder: Path, queries: list[str], docs: list[str]) -> Path:
    folder.mkdir(parents=True)
    with (folder / "queries.jsonl").open("w") as fh:
        for i, q in enumerate(queries):
            fh.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    with (folder / "corpus.jsonl").open("w") as fh:
        for i, d in enumerate(docs):
            fh.write(json.dumps({"_id": f"d{i}", "text": d}) + "\n")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n")
    return folder


def test_planted_duplicates_are_decontaminated(tmp_path):
    root = write_tree(tmp_path / "src")
    clean = mine([root], MineConfig())
    go_code = next(p.document for p in clean.pairs if p.task == "nl2code" and p.language == "go")
    near_go = go_code.replace("out = append(out, total)", "out = append(out, total+0)") + "\n// extra comment"
    assert 0.7 <= jaccard(near_go, go_code) < 1.0
    eval_dir = _beir(
        tmp_path / "eval",
        queries=[f"  {DOC.upper()}   IN python. "],  # the python query, after normalisation
        docs=[FIXTURES["python"][1].replace("    ", "\t")],  # the whole python function, re-indented
    )
    result = mine([root], MineConfig(tasks=("code2completion",)), exclude=[eval_dir])
    # completion pairs of python: query + rest together reproduce the evaluation document
    assert not any(p.language == "python" for p in result.pairs)
    assert any(p.language == "go" for p in result.pairs)

    result = mine([root], MineConfig(), exclude=[eval_dir])
    assert not [p for p in result.pairs if p.language == "python"]
    assert {p.language for p in result.pairs if p.task == "nl2code"} == set(FIXTURES) - {"python"}
    assert result.stats["decontamination"]["dropped"] == 3  # python's nl2code, code2nl, code2completion

    near_dir = _beir(tmp_path / "near", queries=["unrelated question"], docs=[near_go])
    deco = Decontaminator.from_beir([near_dir])
    assert deco.match(go_code) == "near/corpus/d0"  # a near duplicate, not an exact one
    assert deco.match("def unrelated():\n    return 42 + 17 * three_values\n") is None


def test_exclude_must_be_a_beir_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="BEIR"):
        Decontaminator.from_beir([tmp_path])


def test_mbpp_train_split(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    with path.open("w") as fh:
        for task_id in (5, 100, 600, 601, 800, 974):
            fh.write(json.dumps({"task_id": task_id, "text": f"Write a function {task_id}.",
                                 "code": f"def f{task_id}():\r\n    return {task_id}"}) + "\n")
    pairs = load_mbpp_pairs(path)
    assert [p.symbol for p in pairs] == ["task_601", "task_800", "task_974"]
    assert all(p.task == "nl2code" and p.language == "python" and "\r" not in p.document for p in pairs)
    assert [p.symbol for p in load_mbpp_pairs(path, "test")] == ["task_100"]
    with pytest.raises(ValueError, match="split"):
        load_mbpp_pairs(path, "dev")


def test_real_mbpp_train_has_374_problems():
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw" / "mbpp" / "mbpp.jsonl"
    if not real.is_file():
        pytest.skip("shared MBPP file not present")
    pairs = load_mbpp_pairs(real)
    assert len(pairs) == 374


def test_cli_mine_writes_jsonl_and_stats(tmp_path):
    from typer.testing import CliRunner

    from codesift.cli import app

    root = write_tree(tmp_path / "src")
    out = tmp_path / "out" / "pairs.jsonl"
    report = tmp_path / "out" / "stats.md"
    res = CliRunner().invoke(app, ["data", "mine", str(root), "-o", str(out), "--report", str(report), "--tasks", "nl2code"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(FIXTURES)
    assert all({"task", "query", "document", "language", "source"} <= row.keys() for row in rows)
    assert {row["task"] for row in rows} == {"nl2code"}
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["pairs"] == len(rows) and "nl2code" in report.read_text()
    res = CliRunner().invoke(app, ["data", "mine", str(root), "-o", str(out), "--tasks", "qa"])
    assert res.exit_code != 0 and "cannot mine" in str(res.exception)


def test_write_pairs_roundtrip(tmp_path):
    n = write_pairs([Pair("nl2code", "q é", "d", "python", "s")], tmp_path / "p.jsonl")
    assert n == 1 and json.loads((tmp_path / "p.jsonl").read_text())["query"] == "q é"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("tests/a.py", True), ("pkg/test_x.py", True), ("net/http_test.go", True), ("src/FooTest.java", True),
     ("go/testdata/a.go", True), ("lib/contest.py", False), ("src/latest.py", False), ("protest/x.py", False)],
)
def test_is_test_path(path, expected):
    from codesift.data.mining import is_test_path

    assert is_test_path(path) is expected


def test_tests_are_skipped_and_files_capped_per_source(tmp_path):
    root = write_tree(tmp_path / "src")
    (root / "tests").mkdir()
    other = FIXTURES["python"][1].replace("running_total", "other_total").replace(DOC, "Accumulate sums for a test")
    (root / "tests" / "acc.py").write_text(other.replace("total = 0", "total = 1"))
    assert not any(Path(p.path).parent.name == "tests" for p in mine([root]).pairs)
    assert any(Path(p.path).parent.name == "tests" for p in mine([root], MineConfig(skip_tests=False)).pairs)
    capped = mine([root], MineConfig(max_files_per_source=3))
    assert sum(capped.stats["files_by_language"].values()) == 3
