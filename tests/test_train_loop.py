"""The training loop on a tiny random Qwen2: config, gradient cache on the real model, run + save + reload,
kill-and-resume, and 2-process (gloo) equivalence with one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from codesift.train.config import TrainConfig

CODE = ["def add(a, b):\n    return a + b", "print('Hello World!')", "int arr[5] = {0, 0, 0, 0, 0};",
        "SELECT name FROM users WHERE age > 30;", "import numpy as np\nx = np.zeros((3, 4))",
        "for (int i = 0; i < n; i++) { sum += x[i]; }", "class Stack:\n    def push(self, item): pass",
        "function f(u) { return fetch(u); }"]


def _pairs(n: int) -> list[dict]:
    return [{"task": "nl2code", "query": f"query number {i}: {CODE[i % 8][:12]}",
             "document": f"# snippet {i}\n{CODE[(i * 3) % 8]}", "language": "python", "source": "t"} for i in range(n)]


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in _pairs(48)))
    return p


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("beir")
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": c}) + "\n" for i, c in enumerate(CODE)))
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": c[:10]}) + "\n" for i, c in enumerate(CODE)))
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(8)))
    (d / "task.json").write_text(json.dumps({"task": "nl2code"}))
    return d


def _cfg(model, data, out, **kw) -> TrainConfig:
    base = {"model": str(model), "data": [str(data)], "out": str(out), "steps": 4, "batch_size": 8, "mini_batch_size": 3,
            "lr": 1e-3, "bf16": False, "max_length": 64, "device": "cpu", "progress": False, "save_every": 2,
            "keep_last": 2, "warmup_ratio": 0.25, "peak_probe_s": 0.05}
    base.update(kw)
    return TrainConfig().replace(**base)


def test_config_yaml_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 10\nbatch_size: 16\nmatryoshka_dims: [32, 64]\ndata: a.jsonl\n")
    cfg = TrainConfig.from_yaml(y)
    assert (cfg.steps, cfg.batch_size, cfg.matryoshka_dims, cfg.data) == (10, 16, [32, 64], ["a.jsonl"])
    assert cfg.temperature == 0.05 and cfg.max_length == 512 and not cfg.lora  # paper defaults kept
    assert cfg.replace(steps=3, batch_size=None).steps == 3  # None = flag not given
    y.write_text("stepz: 10\n")
    with pytest.raises(ValueError, match="unknown config key.*stepz"):
        TrainConfig.from_yaml(y)
    with pytest.raises(ValueError, match="pooling"):
        TrainConfig().replace(pooling="median")
    y.write_text("steps: [10\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        TrainConfig.from_yaml(y)
    y.write_text("lr: 5e-5\nsteps: 20\n")  # YAML 1.1 reads 5e-5 (no dot) as a string
    assert TrainConfig.from_yaml(y).lr == 5e-5
    for bad, message in (({"lr": "fast"}, "lr must be a number, got 'fast'"),
                         ({"steps": 2.5}, "steps must be an integer"), ({"bf16": "yes"}, "bf16 must be true or false")):
        with pytest.raises(ValueError, match=message):
            TrainConfig().replace(**bad)
    from codesift.train.loop import lr_factor

    c = TrainConfig().replace(steps=100, warmup_ratio=0.1, min_lr_ratio=0.1)
    assert [round(lr_factor(s, c), 4) for s in (0, 9, 10, 55, 100)] == [0.1, 1.0, 1.0, 0.55, 0.1]


def test_gradient_cache_on_the_model_matches_one_big_batch(tiny_qwen_dir, pair_file, tmp_path):
    from codesift.train.data import load_pairs
    from codesift.train.loop import build_embedder, step_gradients, trainable_parameters

    pairs = load_pairs([pair_file])[:8]
    runs = {  # one chunk = plain backprop through the whole batch; 3 = chunks of 3,3,2, cached or kept
        "one_chunk": {"mini_batch_size": 8},
        "cached": {"mini_batch_size": 3},
        "plain_chunks": {"mini_batch_size": 3, "gradient_cache": False},
        "reordered": {"mini_batch_size": 3},
    }
    grads = {}
    for name, kw in runs.items():
        cfg = _cfg(tiny_qwen_dir, pair_file, tmp_path, matryoshka_dims=[16, 64], **kw)
        emb = build_embedder(cfg)
        batch = pairs[::-1] if name == "reordered" else pairs  # the loss must not depend on pair order
        out, _tokens = step_gradients(emb, batch, cfg, [16, 64])
        grads[name] = (out, {n: p.grad.clone() for n, p in trainable_parameters(emb)})
    plain, g1 = grads["one_chunk"]
    for name in ("cached", "plain_chunks", "reordered"):
        other, g2 = grads[name]
        assert other.loss.item() == pytest.approx(plain.loss.item(), rel=1e-5), name
        assert set(other.per_dim) == {16, 64}
        assert other.loss.item() == pytest.approx(sum(other.per_dim.values()), rel=1e-6)
        for n in g1:
            # float32 summation order differs (chunked padding): tolerance relative to the gradient's scale
            torch.testing.assert_close(g2[n], g1[n], rtol=1e-4, atol=1e-5 * float(g1[n].abs().max()), msg=f"{name} {n}")


def test_hard_negatives_join_the_documents_and_raise_the_loss(tiny_qwen_dir, pair_file, tmp_path):
    import dataclasses

    from codesift.train.data import load_pairs
    from codesift.train.loop import build_embedder, step_gradients

    pairs = load_pairs([pair_file])[:6]
    with_neg = [dataclasses.replace(p, negatives=(f"# other {i}\n{CODE[(i + 1) % 8]}",)) for i, p in enumerate(pairs)]
    losses = {}
    for k, batch in (("none", pairs), ("ignored", with_neg), ("hard", with_neg)):
        cfg = _cfg(tiny_qwen_dir, pair_file, tmp_path, mini_batch_size=4, hard_negatives=0 if k == "ignored" else 1)
        out, tokens = step_gradients(build_embedder(cfg), batch, cfg, [64])
        losses[k] = (out.loss.item(), tokens)
    assert losses["ignored"] == losses["none"]  # hard_negatives: 0 reads none of them
    assert losses["hard"][1] > losses["none"][1]  # six more documents were embedded
    assert losses["hard"][0] > losses["none"][0]  # more candidates per query: a larger cross-entropy


def test_train_run_logs_checkpoints_and_saves_a_loadable_model(tiny_qwen_dir, pair_file, beir_dir, tmp_path):
    from codesift.model.embedder import Embedder
    from codesift.train.loop import train

    out = train(_cfg(tiny_qwen_dir, pair_file, tmp_path / "run", eval_dir=str(beir_dir), steps=4))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_ndcg_at_10" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["step"] for r in evals] == [0, 4]
    for r in steps:
        assert {"loss_dim64", "lr", "tokens_per_s", "mfu", "peak_mem_mb"} <= set(r)
        assert r["loss"] > 0 and r["tokens"] > 0 and 0 < r["mfu"] < 1
    assert steps[-1]["loss"] < steps[0]["loss"]  # lr 1e-3 on 48 pairs: it learns
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    trained = Embedder(str(out), device="cpu", dtype="float32")
    assert trained.pooling == "lasttoken"
    texts = ["def add(a, b):\n    return a + b", "print('hi')"]
    v = trained.encode(texts, task="nl2code", role="document")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu", tokenizer_kwargs={"padding_side": "left"})
    w = st.encode(texts, prompt_name="nl2code_document", normalize_embeddings=True)
    assert abs(v - w).max() < 1e-4
    base = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32").encode(texts, task="nl2code", role="document")
    assert abs(v - base).max() > 1e-3  # the weights changed
    with pytest.raises(ValueError, match="--resume"):
        train(_cfg(tiny_qwen_dir, pair_file, tmp_path / "run"))


def test_encoder_trains_with_task_prefixes_and_saves_its_reading_length(pair_file, tmp_path):
    """`prompts: true` conditions a plain encoder on the task prefixes; save_max_length sets what it reads."""
    from codesift.model.embedder import Embedder
    from codesift.testing import make_tiny_bert
    from codesift.train.loop import train

    bert = make_tiny_bert(tmp_path / "bert")
    assert Embedder(str(bert), device="cpu").prefix("nl2code", "query") == ""  # a plain encoder: no prefixes
    out = train(_cfg(bert, pair_file, tmp_path / "run", pooling="mean", prompts=True, max_length=32,
                     save_max_length=128, steps=2))
    trained = Embedder(str(out), device="cpu", dtype="float32")
    assert trained.pooling == "mean" and trained.max_length == 128
    assert trained.prefix("nl2code", "query").startswith("Find the most relevant code snippet")
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    v = trained.encode(["def add(a, b): return a + b"], task="nl2code", role="query")
    w = trained.encode(["def add(a, b): return a + b"], task="nl2code", role="document")
    assert abs(v - w).max() > 1e-4  # the prefix changes the vector


@pytest.mark.parametrize("kw", [{"pooling": "latent_attention"}, {"lora": True, "lora_r": 4}])
def test_latent_attention_and_lora_train_and_reload(tiny_qwen_dir, pair_file, tmp_path, kw):
    from codesift.model.embedder import Embedder
    from codesift.train.loop import train

    cfg = _cfg(tiny_qwen_dir, pair_file, tmp_path / "run", steps=1, save_every=0, **kw)
    out = train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    if cfg.lora:  # only the adapters train: a small fraction of the weights
        n_all = sum(p.numel() for p in Embedder(str(tiny_qwen_dir), device="cpu").model.parameters())
        assert rows[0]["loss"] > 0 and (out / "train_config.json").is_file()
        from codesift.train.loop import build_embedder, trainable_parameters

        n_train = sum(p.numel() for _, p in trainable_parameters(build_embedder(cfg)))
        assert 0 < n_train < n_all / 5
        assert not list(Path(out).glob("adapter_*"))  # LoRA merged into the saved weights
    trained = Embedder(str(out), device="cpu", dtype="float32")
    assert trained.pooling == cfg.pooling
    assert trained.encode(["x = 1"], task="nl2code").shape == (1, 64)


def test_resume_from_a_checkpoint_continues_exactly(tiny_qwen_dir, pair_file, tmp_path):
    import shutil

    from codesift.train.loop import train

    full = train(_cfg(tiny_qwen_dir, pair_file, tmp_path / "full", steps=6, keep_last=3))
    part = tmp_path / "part"  # a run that died right after its step-2 checkpoint (and logged step 3)
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step-00000002", part / "checkpoints" / "step-00000002")
    (part / "checkpoints" / ".tmp-step-00000004-1").mkdir()  # a half-written checkpoint: ignored, cleaned
    lines = (full / "metrics.jsonl").read_text().splitlines()[:3]
    (part / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    train(_cfg(tiny_qwen_dir, pair_file, part, steps=6, keep_last=3), resume=True)
    a, b = _losses(full / "metrics.jsonl"), _losses(part / "metrics.jsonl")
    assert sorted(b) == list(range(1, 7))
    for s in range(1, 7):
        assert b[s] == pytest.approx(a[s], rel=1e-6), s
    assert not (part / "checkpoints" / ".tmp-step-00000004-1").exists()
    with pytest.raises(ValueError, match="different config"):
        train(_cfg(tiny_qwen_dir, pair_file, part, steps=6, lr=5e-4), resume=True)


def _losses(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r}


@pytest.mark.slow  # three fresh interpreters (~1 min); the in-process resume test above runs by default
def test_sigkill_then_resume_gives_the_same_losses(tiny_qwen_dir, pair_file, tmp_path):
    """A real SIGKILL mid-run, then `codesift train --resume`: the losses equal an uninterrupted run's."""
    args = ["--model", str(tiny_qwen_dir), "--data", str(pair_file), "--steps", "8", "--batch-size", "8",
            "--mini-batch-size", "4", "--lr", "1e-3"]
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("bf16: false\nmax_length: 64\ndevice: cpu\nsave_every: 2\nprogress: false\nwarmup_ratio: 0.25\n"
                        "pooling: latent_attention\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "codesift.cli", "train", str(cfg_file), *args]
    full = subprocess.run([*cmd, "--out", str(tmp_path / "full")], env=env, check=False, capture_output=True, text=True,
                          timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (killed / "checkpoints" / "step-00000004" / "state.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoints" / "step-00000004").is_dir()
    assert not (killed / "modules.json").exists()  # it really died before the end
    resumed = subprocess.run([*cmd, "--out", str(killed), "--resume"], env=env, check=False, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _losses(tmp_path / "full" / "metrics.jsonl"), _losses(killed / "metrics.jsonl")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5, abs=1e-6), s


def _ddp_worker(rank: int, world: int, port: int, model: str, data: str, out: str) -> None:
    import torch.distributed as dist

    from codesift.train.data import load_pairs, shard
    from codesift.train.loop import all_reduce_gradients, build_embedder, step_gradients, trainable_parameters

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = _cfg(model, data, out, mini_batch_size=3, matryoshka_dims=[32, 64], symmetric=True)
        emb = build_embedder(cfg)
        pairs = load_pairs([data])[:8]
        loss, _ = step_gradients(emb, [pairs[i] for i in shard(list(range(8)), rank, world)], cfg, [32, 64])
        named = trainable_parameters(emb)
        all_reduce_gradients([p for _, p in named], world)
        lt = loss.loss.reshape(1).clone()
        dist.all_reduce(lt)  # mean over ranks of the local means = the global mean
        if rank == 0:
            torch.save((float(lt) / world, {n: p.grad.clone() for n, p in named}), Path(out) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tiny_qwen_dir, pair_file, tmp_path):
    import socket

    import torch.multiprocessing as mp

    from codesift.train.data import load_pairs
    from codesift.train.loop import build_embedder, step_gradients, trainable_parameters

    cfg = _cfg(tiny_qwen_dir, pair_file, tmp_path, mini_batch_size=3, matryoshka_dims=[32, 64], symmetric=True)
    emb = build_embedder(cfg)
    loss, _ = step_gradients(emb, load_pairs([pair_file])[:8], cfg, [32, 64])
    want = {n: p.grad.clone() for n, p in trainable_parameters(emb)}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tiny_qwen_dir), str(pair_file), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    got_loss, got = torch.load(tmp_path / "ddp.pt")
    assert got_loss == pytest.approx(loss.loss.item(), rel=1e-5)
    for n, w in want.items():
        torch.testing.assert_close(got[n], w, rtol=1e-4, atol=1e-5 * float(w.abs().max()), msg=n)


def _train_worker(rank: int, world: int, port: int, cfg_dict: dict, resume: bool) -> None:
    from codesift.train.loop import train

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    train(TrainConfig().replace(**cfg_dict), resume=resume)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 2 x 2 spawned processes per case (~1-2 min idle); FSDP is opt-in
@pytest.mark.parametrize("gradient_cache", [True, False])
def test_fsdp_two_processes_train_save_and_resume_like_one_process(tiny_qwen_dir, pair_file, beir_dir, tmp_path,
                                                                   gradient_cache):
    """FSDP2 over 2 gloo processes: the same losses as one unsharded process, step by step, through a
    checkpoint and a resume (optimizer state gathered and re-sharded); the final model loads unsharded."""
    import torch.multiprocessing as mp

    from codesift.model.embedder import Embedder
    from codesift.train.loop import train

    kw = {"steps": 4, "schedule": "constant", "warmup_ratio": 0.0, "matryoshka_dims": [32, 64], "mini_batch_size": 3,
              "gradient_cache": gradient_cache, "eval_dir": str(beir_dir), "eval_every": 2, "peak_probe_s": 0.0}
    ref = train(_cfg(tiny_qwen_dir, pair_file, tmp_path / "one", **kw))
    sharded = _cfg(tiny_qwen_dir, pair_file, tmp_path / "fsdp", fsdp=True, **kw).to_dict()
    for steps, resume in ((2, False), (4, True)):  # stop after the step-2 checkpoint, then resume to step 4
        mp.start_processes(_train_worker, args=(2, _free_port(), {**sharded, "steps": steps}, resume), nprocs=2,
                           join=True, start_method="spawn")
    a, b = _losses(ref / "metrics.jsonl"), _losses(tmp_path / "fsdp" / "metrics.jsonl")
    assert sorted(b) == list(range(1, 5))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-4), s
    evals = [r for r in map(json.loads, (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines())
             if "eval_ndcg_at_10" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    texts = ["def add(a, b): return a + b", "SELECT 1"]
    want = Embedder(str(ref)).encode(texts, task="nl2code", role="document")
    got = Embedder(str(tmp_path / "fsdp")).encode(texts, task="nl2code", role="document")
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_fsdp_with_lora_is_refused(tiny_qwen_dir, pair_file, tmp_path):
    from codesift.train.loop import train

    with pytest.raises(ValueError, match="fsdp with lora"):
        train(_cfg(tiny_qwen_dir, pair_file, tmp_path, fsdp=True, lora=True))


@pytest.mark.slow  # torchrun with two fresh interpreters
def test_torchrun_two_processes_log_the_same_losses_as_one(tiny_qwen_dir, pair_file, tmp_path):
    """The whole loop under `torchrun --nproc-per-node 2` (gloo): same global losses, step by step."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("bf16: false\nmax_length: 64\ndevice: cpu\nprogress: false\npeak_probe_s: 0.05\nsave_every: 2\n")
    args = ["-m", "codesift.cli", "train", str(cfg_file), "--model", str(tiny_qwen_dir), "--data", str(pair_file),
            "--steps", "4", "--batch-size", "8", "--mini-batch-size", "2", "--lr", "1e-3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env, check=False,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
                          *args, "--out", str(tmp_path / "two")], env=env, check=False, capture_output=True, text=True,
                          timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _losses(tmp_path / "one" / "metrics.jsonl"), _losses(tmp_path / "two" / "metrics.jsonl")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-4), s
