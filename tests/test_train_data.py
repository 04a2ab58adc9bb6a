"""Pair files and the task-homogeneous, duplicate-free batch sampler."""

from __future__ import annotations

import itertools
import json

import pytest

from codesift.train.data import Pair, TaskBatchSampler, load_pairs, shard


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(task, n, prefix, source="s"):
    return [{"task": task, "query": f"{prefix} q{i}", "document": f"{prefix} d{i}", "language": "python",
             "source": source} for i in range(n)]


def test_load_pairs_groups_by_file_and_task(tmp_path):
    a = _write(tmp_path / "a.jsonl", _rows("nl2code", 3, "a") + _rows("code2code", 2, "b"))
    b = _write(tmp_path / "b.jsonl", _rows("nl2code", 2, "c", source="other"))
    pairs = load_pairs([a, b])
    assert [p.dataset for p in pairs] == ["a:nl2code"] * 3 + ["a:code2code"] * 2 + ["b:nl2code"] * 2
    by_source = load_pairs([a, b], group_by="source")
    assert {p.dataset for p in by_source} == {"s:nl2code", "s:code2code", "other:nl2code"}


def test_load_pairs_errors_are_actionable(tmp_path):
    with pytest.raises(FileNotFoundError, match="data mine"):
        load_pairs([tmp_path / "missing.jsonl"])
    bad = _write(tmp_path / "bad.jsonl", [{"task": "nl2code", "query": "x"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing .*document"):
        load_pairs([bad])
    unknown = _write(tmp_path / "u.jsonl", [{"task": "nl2sql", "query": "x", "document": "y"}])
    with pytest.raises(ValueError, match="valid tasks"):
        load_pairs([unknown])
    with pytest.raises(ValueError, match="--data"):
        load_pairs([])


def _pairs(spec):
    out = []
    for name, n in spec.items():
        out += [Pair(name.split(":")[1], f"{name} q{i}", f"{name} d{i}", dataset=name) for i in range(n)]
    return out


def test_every_batch_is_from_one_dataset_and_epoch_is_deterministic():
    pairs = _pairs({"x:nl2code": 40, "y:qa": 20, "z:code2code": 3})
    s = TaskBatchSampler(pairs, batch_size=8, seed=3)
    batches = s.epoch(0)
    assert len(batches) == 5 + 2  # z is smaller than a batch: never used; leftovers dropped
    for b in batches:
        assert len(b) == 8 and len({pairs[i].dataset for i in b}) == 1
    assert len({i for b in batches for i in b}) == 56  # no pair twice in an epoch
    assert s.epoch(0) == TaskBatchSampler(pairs, batch_size=8, seed=3).epoch(0)
    assert s.epoch(1) != s.epoch(0)
    assert TaskBatchSampler(pairs, batch_size=8, seed=4).epoch(0) != batches


def test_mixing_round_robin_alternates_and_proportional_follows_sizes():
    pairs = _pairs({"x:nl2code": 24, "y:qa": 8})
    rr = TaskBatchSampler(pairs, batch_size=4, mixing="round_robin").epoch(0)
    names = [pairs[b[0]].dataset for b in rr]
    assert names == ["x:nl2code", "y:qa"] * 2 + ["x:nl2code"] * 4
    counts = {"x:nl2code": 0, "y:qa": 0}
    s = TaskBatchSampler(pairs, batch_size=4, mixing="proportional", seed=0)
    for e in range(20):
        for b in s.epoch(e):
            counts[pairs[b[0]].dataset] += 1
    assert counts == {"x:nl2code": 120, "y:qa": 40}  # 6:2 batches per epoch
    # proportional mixing interleaves: not all x batches first in every epoch
    assert any([pairs[b[0]].dataset for b in s.epoch(e)][:2] != ["x:nl2code"] * 2 for e in range(20))


def test_no_duplicate_text_inside_a_batch():
    # the same document answers many queries (and one query repeats): they must land in different batches
    pairs = [Pair("nl2code", f"q{i}", "def same(): pass" if i % 3 == 0 else f"d{i}", dataset="x:nl2code") for i in range(30)]
    pairs += [Pair("nl2code", "q1", "another answer", dataset="x:nl2code")]
    s = TaskBatchSampler(pairs, batch_size=5, seed=0)
    for e in range(5):
        batches = s.epoch(e)
        assert len(batches) >= 4
        for b in batches:
            texts = [t for i in b for t in (pairs[i].query, pairs[i].document)]
            assert len(texts) == len(set(texts)), b


def test_resume_stream_continues_at_the_exact_batch():
    pairs = _pairs({"x:nl2code": 20, "y:qa": 12})
    s = TaskBatchSampler(pairs, batch_size=4, seed=1)
    full = list(itertools.islice(s.batches(), 30))  # spans several epochs (8 batches each)
    assert list(itertools.islice(s.batches(start_step=13), 17)) == full[13:]


def test_sampler_and_shard_errors():
    pairs = _pairs({"x:nl2code": 3})
    with pytest.raises(ValueError, match="lower --batch-size"):
        TaskBatchSampler(pairs, batch_size=4)
    with pytest.raises(ValueError, match="mixing"):
        TaskBatchSampler(pairs, batch_size=2, mixing="random")
    assert shard(list(range(8)), 1, 2) == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="divide"):
        shard(list(range(6)), 0, 4)


def test_negatives_load_and_never_repeat_a_batch_text(tmp_path):
    from codesift.train.data import batch_negatives

    f = tmp_path / "p.jsonl"
    rows = [
        {"task": "nl2code", "query": "q1", "document": "d1", "negatives": ["n1", "d2", "n2"]},
        {"task": "nl2code", "query": "q2", "document": "d2", "negatives": ["n1", "n3"]},
        {"task": "nl2code", "query": "q3", "document": "d3"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = load_pairs([f])
    assert pairs[0].negatives == ("n1", "d2", "n2") and pairs[2].negatives == ()
    # d2 is row 2's positive and n1 is taken by row 1: neither may appear again
    assert batch_negatives(pairs, 2) == ["n1", "n2", "n3"]
    assert batch_negatives(pairs, 1) == ["n1", "n3"]
    assert batch_negatives(pairs, 0) == []
    f.write_text(json.dumps({"task": "nl2code", "query": "q", "document": "d", "negatives": "n"}) + "\n")
    with pytest.raises(ValueError, match="p.jsonl:1: 'negatives' must be a list"):
        load_pairs([f])
