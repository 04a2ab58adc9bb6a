import json
import random

import pytest

from codesift.data.mix import MixSpec, build_mix, write_beir

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "sigma", "omega",
         "rho", "tau"]


def _doc(tag, i):
    rng = random.Random(f"{tag}{i}")  # distinct texts: no two are near duplicates
    return f"def {tag}_{i}(" + ", ".join(rng.sample(WORDS, 4)) + "):\n    return " + " * ".join(rng.sample(WORDS, 6)) + "\n"


def _pairs(path, task, n, tag):
    with open(path, "w") as fh:
        fh.writelines(json.dumps({"task": task, "query": " ".join(random.Random(f"q{tag}{i}").sample(WORDS, 8)),
                                 "document": _doc(tag, i),
                                 "language": "python", "source": f"lib{i % 3}"}) + "\n" for i in range(n))


def test_mix_counts_holdout_decontamination_and_sources(tmp_path):
    _pairs(tmp_path / "a.jsonl", "nl2code", 50, "alpha")
    _pairs(tmp_path / "b.jsonl", "code2nl", 30, "beta")
    # an evaluation set that holds one pair of a.jsonl: that pair must never be trained on
    ev = tmp_path / "eval" / "dev"
    write_beir(ev, [{"query": "unrelated text entirely here", "document": _doc("alpha", 7)}], "nl2code")
    (tmp_path / "spec.yaml").write_text(
        "seed: 1\nholdout: 5\nexclude: [eval/*]\ncomponents:\n"
        "  - {name: A, file: a.jsonl, count: 60}\n"
        "  - {name: B, file: b.jsonl, count: 100, keep_source: true, holdout: 0}\n")
    spec = MixSpec.from_yaml(tmp_path / "spec.yaml")
    report = build_mix(spec, tmp_path / "mix.jsonl", tmp_path / "val")
    rows = [json.loads(x) for x in (tmp_path / "mix.jsonl").read_text().splitlines()]
    by = {r["name"]: r for r in report.rows}
    assert by["A"]["train"] == 44 and by["A"]["holdout"] == 5 and by["A"]["contaminated"] == 1
    assert by["B"]["train"] == 30 and by["B"]["holdout"] == 0 and by["B"]["available"] == 30
    assert len(rows) == 74
    assert all(r["document"] != _doc("alpha", 7) for r in rows)
    assert {r["source"] for r in rows if r["task"] == "nl2code"} == {"A"}
    assert {r["source"] for r in rows if r["task"] == "code2nl"} == {"lib0", "lib1", "lib2"}
    held = (tmp_path / "val" / "A" / "queries.jsonl").read_text().splitlines()
    assert len(held) == 5
    held_q = {json.loads(x)["text"] for x in held}
    assert not held_q & {r["query"] for r in rows}, "held-out pairs leaked into the mix"
    # deterministic
    build_mix(spec, tmp_path / "mix2.jsonl")
    assert (tmp_path / "mix2.jsonl").read_text() == (tmp_path / "mix.jsonl").read_text()
    assert "| **total** | | | **74** |" in report.markdown()


def test_mix_spec_errors(tmp_path):
    (tmp_path / "s.yaml").write_text("components: []\n")
    with pytest.raises(ValueError, match="components"):
        MixSpec.from_yaml(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("components:\n  - {name: A, file: nope.jsonl, count: 3}\n")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        build_mix(MixSpec.from_yaml(tmp_path / "s.yaml"), tmp_path / "m.jsonl")
    (tmp_path / "s.yaml").write_text("components:\n  - {name: A, file: a.jsonl, count: 3, colour: red}\n")
    with pytest.raises(ValueError, match="colour"):
        MixSpec.from_yaml(tmp_path / "s.yaml")
