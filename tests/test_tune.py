"""`codesift tune` on small git repositories made here, with a tiny random model: the time split (no held-out
commit trained on), install and revert, resume after an interruption, and each refusal (nothing changed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from codesift.data.mining import MineReport, text_hash
from codesift.tune.history import SplitConfig, held_out_count, held_out_gold, split_history, training_pairs
from codesift.tune.run import TuneConfig, tune
from test_model_hardening import assert_one_error_line, run_main

FAST = TuneConfig(minutes=0.2, batch_size=8)  # a few small steps: the tests check the mechanism, not the gain

TOPICS = ["parse", "render", "store", "fetch", "score"]


def _git(root: Path, *args: str, when: int = 0) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "Dev",
           "GIT_COMMITTER_EMAIL": "dev@example.com", "GIT_AUTHOR_DATE": f"{1_700_000_000 + when} +0000",
           "GIT_COMMITTER_DATE": f"{1_700_000_000 + when} +0000"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env).stdout


def _module(topic: str, version: int) -> str:
    funcs = []
    for i in range(3):
        funcs.append(f'def {topic}_step_{i}(items, limit={version + i}):\n'
                     f'    """{topic.capitalize()} the items of stage {i}, keeping at most the limit."""\n'
                     f'    out = [x for x in items if x is not None]\n'
                     f'    total = sum(len(str(x)) for x in out) + {version * 7 + i}\n'
                     f'    return out[:limit], total\n')
    return "\n\n".join(funcs)


def make_repo(root: Path, commits: int = 26) -> Path:
    """A Python repository: one commit adding five modules, then ``commits - 1`` commits each changing one."""
    root.mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    for topic in TOPICS:
        (root / f"{topic}.py").write_text(_module(topic, 0))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "Add the first version of every module", when=0)
    for n in range(1, commits):
        topic = TOPICS[n % len(TOPICS)]
        (root / f"{topic}.py").write_text(_module(topic, n))
        _git(root, "commit", "-q", "-am", f"Raise the {topic} limit for batch number {n} of the nightly import",
             when=n * 60)
    return root


@pytest.fixture()
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")


def _shas(root: Path) -> list[str]:
    return _git(root, "rev-list", "HEAD").split()


def test_held_out_count_is_a_clamped_fraction():
    cfg = SplitConfig()
    assert [held_out_count(n, cfg) for n in (20, 100, 150, 400, 600, 5000)] == [10, 10, 15, 40, 50, 50]


def test_the_newest_commits_are_held_out_and_never_trained_on(repo):
    cfg = SplitConfig()
    split = split_history(repo, cfg)
    shas = _shas(repo)
    assert split.usable == 25 and [c.sha for c in split.held_out] == shas[:10]
    assert split.cutoff == shas[10]  # the parent of the oldest held-out commit
    assert all(c.files and c.query.startswith("Raise the") for c in split.held_out)
    pairs, counts = training_pairs(repo, split, cfg, None, None, MineReport())
    assert counts["commit_pairs"] > 0 and counts["docstring_pairs"] > 0
    held_queries = {c.query for c in split.held_out}
    gold = held_out_gold(repo, split, cfg.mining, None)
    assert gold
    for pair in pairs:
        assert pair.query not in held_queries
        assert text_hash(pair.document) not in gold
        assert not any(text_hash(n) in gold for n in pair.negatives)
    trained = {int(p.query.split("batch number ")[1].split()[0]) for p in pairs if p.source == "commits"}
    assert trained and max(trained) < 25 - 10 + 1  # commits 16..25 are the held-out ones


def _tune(repo, monkeypatch, capsys, *extra) -> dict:
    code, out, err = run_main(["tune", str(repo), "--json", "--minutes", "0.3", *extra], monkeypatch, capsys)
    assert code == 0, err
    return json.loads(out)


def _status(repo, monkeypatch, capsys) -> dict:
    code, out, err = run_main(["status", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0, err
    return json.loads(out)


def test_install_names_the_tuned_model_and_revert_goes_back(repo, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CODESIFT_MODEL", str(tiny_bert_dir))
    code, _, err = run_main(["index", str(repo)], monkeypatch, capsys)
    assert code == 0, err
    monkeypatch.setattr("codesift.tune.evaluate.wins", lambda before, after: True)  # the policy has its own test
    summary = _tune(repo, monkeypatch, capsys, "--out", str(tmp_path / "exported"))
    tuned = repo / ".codesift" / "tuned-model"
    assert summary["installed"] and summary["model"] == str(tuned.resolve())
    assert summary["pairs"]["commit_pairs"] > 0 and summary["held_out_commits"] == 10
    assert set(summary["before"]) == {"acc@1", "acc@5", "acc@10"} and summary["steps"] >= 1
    assert not (repo / ".codesift" / "tune").exists()  # the work (checkpoints) is removed when done
    st = _status(repo, monkeypatch, capsys)
    assert st["model"] == str(tuned.resolve()) and st["tuned"]["base_model"] == str(tiny_bert_dir)
    assert st["chunks"] > 0 and not st["staleness"]["stale"]
    code, out, err = run_main(["search", "parse the items", str(repo), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out), err
    from codesift.model.embedder import Embedder

    assert Embedder(tmp_path / "exported").encode(["def f(): pass"]).shape[0] == 1  # --out: a model folder
    code, _, err = run_main(["index", str(repo), "--rebuild"], monkeypatch, capsys)
    assert code == 0, err
    assert _status(repo, monkeypatch, capsys)["model"] == str(tuned.resolve())  # a rebuild keeps the tuned model

    code, out, err = run_main(["tune", str(repo), "--revert", "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["reverted"], err
    st = _status(repo, monkeypatch, capsys)
    assert st["model"] == str(tiny_bert_dir) and st["tuned"] is None and not tuned.exists()
    code, _, err = run_main(["tune", str(repo), "--revert"], monkeypatch, capsys)
    assert_one_error_line(code, err, "nothing to revert")


def test_a_model_that_does_not_win_is_not_installed(repo, tiny_bert_dir, monkeypatch, capsys):
    monkeypatch.setenv("CODESIFT_MODEL", str(tiny_bert_dir))
    monkeypatch.setattr("codesift.tune.evaluate.wins", lambda before, after: False)
    summary = tune(repo, cfg=FAST, echo=lambda line: None).to_dict()
    assert not summary["installed"] and "does not beat" in summary["message"]
    assert not (repo / ".codesift" / "tuned-model").exists() and not (repo / ".codesift" / "manifest.sqlite").exists()


def test_the_install_policy():
    from codesift.tune.evaluate import wins

    base = {"acc@1": 0.2, "acc@5": 0.5, "acc@10": 0.6}
    assert wins(base, {**base, "acc@5": 0.6})
    assert wins(base, {**base, "acc@1": 0.3})             # a tie on Acc@5 is broken by Acc@1
    assert not wins(base, dict(base))                     # equal: keep the base
    assert not wins(base, {"acc@1": 0.9, "acc@5": 0.4, "acc@10": 0.9})


def test_an_interrupted_tune_resumes(repo, tiny_bert_dir, monkeypatch, capsys):
    from codesift.train import loop

    monkeypatch.setenv("CODESIFT_MODEL", str(tiny_bert_dir))
    monkeypatch.setattr("codesift.tune.evaluate.wins", lambda before, after: False)
    real = loop._checkpoint

    def checkpoint_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        tune(repo, cfg=FAST, echo=lambda line: None)
    work = repo / ".codesift" / "tune"
    plan = json.loads((work / "plan.json").read_text())
    assert plan["steps"] >= 2 and not plan["trained"] and (work / "pairs.jsonl").is_file()
    monkeypatch.setattr(loop, "_checkpoint", real)
    summary = tune(repo, cfg=FAST, echo=lambda line: None).to_dict()
    assert summary["resumed_from_step"] >= 1 and summary["before"] == plan["before"]


def _refused(root, monkeypatch, capsys, *needles):
    before = sorted(p.name for p in root.iterdir()) if root.exists() else []
    code, _, err = run_main(["tune", str(root)], monkeypatch, capsys)
    assert_one_error_line(code, err, *needles)
    assert not (root / ".codesift").exists() and (sorted(p.name for p in root.iterdir()) if root.exists() else []) == before


def test_bad_repositories_get_one_clear_message_and_nothing_changes(repo, tmp_path, tiny_bert_dir, monkeypatch, capsys):
    monkeypatch.setenv("CODESIFT_MODEL", str(tiny_bert_dir))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.py").write_text("def f():\n    return 1\n")
    _refused(plain, monkeypatch, capsys, "not in a git repository")

    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    _refused(empty, monkeypatch, capsys, "no commits")

    few = make_repo(tmp_path / "few", commits=6)
    _refused(few, monkeypatch, capsys, "5 usable commit", "at least 20")

    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "3", f"file://{repo}", str(shallow)], check=True)
    _refused(shallow, monkeypatch, capsys, "shallow clone", "--unshallow")

    text = tmp_path / "text"
    text.mkdir()
    _git(text, "init", "-q")
    (text / "notes.txt").write_text("nothing to parse\n")
    _git(text, "add", "-A")
    _git(text, "commit", "-q", "-m", "Write down the notes of the meeting")
    _refused(text, monkeypatch, capsys, "no source file in a language the chunker knows")

    (repo / "parse.py").write_text("# edited\n")
    _refused(repo, monkeypatch, capsys, "uncommitted changes", "parse.py")


def test_the_tuned_model_is_saved_in_the_base_models_stored_dtype(tiny_bert_dir, tmp_path):
    """A float16 base gives a float16 tuned folder (no bigger than the base), with the same vectors within 1e-3."""
    from codesift.model.embedder import Embedder
    from codesift.tune.run import save_like_base, stored_dtype

    emb = Embedder(str(tiny_bert_dir), device="cpu", dtype="float32")
    assert stored_dtype(str(tiny_bert_dir)) == "float32"
    half_base = save_like_base(emb, tmp_path / "base16", "float16")
    assert stored_dtype(str(half_base)) == "float16"
    tuned = save_like_base(emb, tmp_path / "tuned", stored_dtype(str(half_base)))
    size = lambda d: sum(p.stat().st_size for p in Path(d).glob("*.safetensors"))
    assert size(tuned) <= size(half_base) < size(tiny_bert_dir)
    texts = ["def add(a, b): return a + b", "parse the config file"]
    a = emb.encode(texts, task="nl2code", role="document")
    b = Embedder(str(tuned), device="cpu", dtype="float32").encode(texts, task="nl2code", role="document")
    assert float((a * b).sum(axis=1).min()) > 1 - 1e-3
