"""scripts/public_data.py: conversion, decontamination and snapshot reading on tiny inputs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from codesift.data.decontam import Decontaminator

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "public_data.py"


@pytest.fixture(scope="module")
def pd():
    spec = importlib.util.spec_from_file_location("public_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["public_data"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["public_data"]


def test_fill_replaces_longer_variable_names_first(pd):
    text = pd._fill("flights from city_name1 to city_name10", {"city_name1": "boston", "city_name10": "denver"})
    assert text == "flights from boston to denver"


def test_convert_drops_empty_repeated_and_contaminated_pairs(pd, tmp_path):
    eval_sql = "SELECT name , country , age FROM singer ORDER BY age DESC"
    rows = [
        ("How many heads are older than 56?", "SELECT count(*) FROM head WHERE age > 56"),
        ("How many heads are older than 56?", "SELECT count(*) FROM head WHERE age > 56"),  # repeat
        ("   ", "SELECT 1"),  # empty query
        ("List singers by age", eval_sql.upper()),  # the eval document, up to case: exact match
        ("What is the id of the oldest dog?", "SELECT dog_id FROM dogs ORDER BY age DESC LIMIT 1"),
    ]
    dataset = pd.Dataset("toy", "nl2code", "sql", lambda mirror: iter(rows))
    decontam = Decontaminator([("spider-dev/corpus/sql1", eval_sql)])
    stats = pd.convert(dataset, tmp_path, decontam, tmp_path, seed=0)

    assert (stats["read"], stats["empty"], stats["duplicate"], stats["contaminated"]) == (5, 1, 1, 1)
    assert stats["before_decontam"] == 3 and stats["after_decontam"] == stats["written"] == 2
    assert stats["contaminated_by"] == {"spider-dev": 1}
    written = [json.loads(line) for line in (tmp_path / "toy.jsonl").read_text().splitlines()]
    assert [r["query"] for r in written] == [rows[0][0], rows[4][0]]
    assert set(written[0]) == {"task", "query", "document", "language", "source", "path", "symbol"}
    assert written[0]["task"] == "nl2code" and written[0]["source"] == "toy"


def test_convert_writes_no_file_when_every_pair_is_contaminated(pd, tmp_path):
    (tmp_path / "toy.jsonl").write_text("stale\n")
    dataset = pd.Dataset("toy", "nl2code", "python", lambda mirror: iter([("q", "def f(): return 1")]))
    decontam = Decontaminator([("cosqa-dev/corpus/0", "def f(): return 1")])
    stats = pd.convert(dataset, tmp_path, decontam, tmp_path, seed=0)
    assert stats["written"] == 0 and not (tmp_path / "toy.jsonl").exists()


def test_convert_caps_a_large_dataset(pd, tmp_path, monkeypatch):
    monkeypatch.setattr(pd, "CAP", 3)
    rows = [(f"question number {i}", f"SELECT {i} FROM t") for i in range(10)]
    dataset = pd.Dataset("big", "nl2code", "sql", lambda mirror: iter(rows))
    stats = pd.convert(dataset, tmp_path, Decontaminator([]), tmp_path, seed=0)
    assert stats["after_decontam"] == 10 and stats["written"] == 3
    assert len((tmp_path / "big.jsonl").read_text().splitlines()) == 3


def test_write_evalset_keeps_unique_queries_and_documents(pd, tmp_path):
    rows = [("q one", "doc A"), ("Q  one", "doc B"), ("q two", "doc A")]
    assert pd.write_evalset(tmp_path / "set", iter(rows)) == 4
    queries = [json.loads(x)["text"] for x in (tmp_path / "set" / "queries.jsonl").read_text().splitlines()]
    corpus = [json.loads(x)["text"] for x in (tmp_path / "set" / "corpus.jsonl").read_text().splitlines()]
    assert queries == ["q one", "q two"] and corpus == ["doc A", "doc B"]
    assert Decontaminator.from_beir([tmp_path / "set"]).match("doc b") is not None


def test_snapshot_reads_a_pinned_commit_and_names_a_missing_mirror(pd, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "train.json").write_text('[{"doc": "q", "code": "c", "label": 1}]')
    subprocess.run([*git, "add", "train.json"], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    mirror = tmp_path / "mirror"
    (mirror / "owner+name").mkdir(parents=True)
    (mirror / "owner+name" / "repo").symlink_to(work / ".git")

    snap = pd.Snapshot("owner/name", commit)
    assert snap.json(mirror, "train.json") == [{"doc": "q", "code": "c", "label": 1}]
    with pytest.raises(FileNotFoundError, match="absent.json"):
        snap.read(mirror, "absent.json")
    with pytest.raises(FileNotFoundError, match="fetch github:other/repo"):
        pd.Snapshot("other/repo", commit).read(mirror, "train.json")


def test_main_reports_a_missing_retrieval_folder_as_an_error(pd, tmp_path, capsys):
    assert pd.main(["--retrieval", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
