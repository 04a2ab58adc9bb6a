"""`codesift embed --ray`: a real local Ray cluster (2 CPUs) and a tiny random model; nothing mocked.

Vectors from Ray workers are compared with one process's within 1e-5 (the shards are batched
differently, so padding and summation order differ; the vectors are unit length).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codesift import Embedder
from codesift.model.distributed import (
    EmbedSpec,
    RayEmbedError,
    embed_on_ray,
    import_ray,
    open_shard_folder,
    plan_workers,
    shard_path,
)
from codesift.testing import fail_once_encoder

ray = pytest.importorskip("ray")  # the optional extra: pip install 'codesift[ray]'

TOL = 1e-5
SHARD = 5
# 23 texts of very different lengths, so that shards (and batches inside them) differ in padding
TEXTS = [f"def f{i}(x):\n    return x * {i}\n" * (1 + i % 4) + "# " + "word " * (i % 7) for i in range(23)]


@pytest.fixture(scope="module")
def spec(tiny_qwen_dir):
    return EmbedSpec(model=str(tiny_qwen_dir), task="nl2code", role="document", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def one_process(tiny_qwen_dir):
    return Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32").encode(TEXTS, task="nl2code", role="document")


def _calls(path: Path) -> list[str]:
    """First text of each batch the workers embedded (FailOnceEncoder's log)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("cpus,largest,asked,want", [
    (16, 16, None, (4, 4)),   # one worker per 4 CPUs
    (2, 2, None, (1, 2)),     # a small machine: one worker with every core
    (2, 2, 2, (2, 1)),
    (32, 8, 2, (2, 8)),       # 4 nodes of 8 CPUs: a worker never asks for more than a node has
    (6, 6, 4, (4, 1)),
])
def test_plan_workers(cpus, largest, asked, want):
    assert plan_workers(cpus, largest, asked) == want


def test_plan_workers_refuses_more_workers_than_cpus():
    with pytest.raises(RayEmbedError, match="more than the cluster's 2 CPUs"):
        plan_workers(2, 2, 3)


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is not installed
    with pytest.raises(RayEmbedError, match=r"pip install 'codesift\[ray\]'"):
        import_ray()


@pytest.mark.parametrize("address,message", [
    ("127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1"),
    ("head:port", "is not an address"),
])
def test_bad_address_is_a_clear_error(spec, tmp_path, address, message):
    with pytest.raises(RayEmbedError, match=message):
        embed_on_ray(TEXTS, spec, tmp_path / "shards", address=address)


def test_folder_of_another_job_is_refused(tmp_path):
    open_shard_folder(tmp_path, {"format": 1, "texts": 3, "shard_size": 5})
    with pytest.raises(RayEmbedError, match="another job .*shard_size"):
        open_shard_folder(tmp_path, {"format": 1, "texts": 3, "shard_size": 4})


# Each job starts workers that import torch: seconds on an idle machine, minutes on a loaded one.
@pytest.mark.timeout(1800)
def test_ray_vectors_order_retry_and_resume(ray_cluster, spec, one_process, tmp_path):
    """A job on 2 workers (a shard fails once and is retried); then an interrupted one that resumes."""
    shards, calls = tmp_path / "out.npy.shards", tmp_path / "calls.log"
    flaky = functools.partial(fail_once_encoder, marker=TEXTS[7], flag=tmp_path / "failed-once")
    r = embed_on_ray(TEXTS, spec, shards, workers=2, shard_size=SHARD, make_encoder=flaky)
    assert r.workers == 2 and r.threads == 1
    assert r.computed == [0, 1, 2, 3, 4] and r.skipped == []
    assert r.retried == {1: 1}  # TEXTS[7] is in shard 1, which failed once
    assert (tmp_path / "failed-once").exists()
    assert r.vectors.shape == one_process.shape
    assert np.abs(r.vectors - one_process).max() < TOL  # same vectors, in input order
    assert np.abs(r.vectors[1:] - r.vectors[:-1]).max() > 0.1  # rows differ, so order is really checked

    # shards 2 and 3 lost; shard 3 fails with no retry left: the job stops with a resume hint, after
    # saving shard 2 (in flight beside it), and it never touched the finished shards
    shard_path(shards, 2).unlink()
    shard_path(shards, 3).unlink()
    failing = functools.partial(fail_once_encoder, marker=TEXTS[16], flag=tmp_path / "failed-3", calls=calls)
    with pytest.raises(RayEmbedError, match="shard 3 .* failed 1 time; .*run the same command again"):
        embed_on_ray(TEXTS, spec, shards, workers=1, shard_size=SHARD, retries=0, make_encoder=failing)
    assert shard_path(shards, 2).exists() and not shard_path(shards, 3).exists()
    assert set(_calls(calls)) <= set(TEXTS[2 * SHARD:4 * SHARD]) and _calls(calls)

    # the rerun embeds shard 3 alone and reuses the other four
    calls.unlink()
    r2 = embed_on_ray(TEXTS, spec, shards, workers=1, shard_size=SHARD, retries=0, make_encoder=failing)
    assert r2.computed == [3] and r2.skipped == [0, 1, 2, 4]
    assert set(_calls(calls)) <= set(TEXTS[3 * SHARD:4 * SHARD]) and _calls(calls)
    assert np.abs(r2.vectors - one_process).max() < TOL

    # other options, same folder: refused instead of mixing vectors of two jobs
    with pytest.raises(RayEmbedError, match="another job .*role"):
        embed_on_ray(TEXTS, dataclasses.replace(spec, role="query"), shards, shard_size=SHARD)


@pytest.mark.timeout(1800)
def test_cli_embed_on_a_cluster_address(ray_cluster, tiny_qwen_dir, one_process, tmp_path):
    """`codesift embed --ray HOST:PORT` joins the running cluster, writes the output and removes its shards."""
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "vectors.npy"
    address = ray_cluster.get_runtime_context().gcs_address
    r = subprocess.run([sys.executable, "-m", "codesift.cli", "embed", "--input", str(src), "-o", str(out),
                        "--model", str(tiny_qwen_dir), "--dtype", "float32", "--device", "cpu", "--role", "document",
                        "--ray", address, "--workers", "1", "--shard-size", str(SHARD)],
                       capture_output=True, text=True, check=False, timeout=600, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "5 shards computed, 0 reused" in r.stderr
    assert np.abs(np.load(out) - one_process).max() < TOL
    assert not (tmp_path / "vectors.npy.shards").exists()


def test_cli_ray_needs_an_output(tiny_qwen_dir):
    r = subprocess.run([sys.executable, "-m", "codesift.cli", "embed", "x", "--model", str(tiny_qwen_dir),
                        "--ray", "local"], capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 2 and "--ray needs --output" in r.stderr and "Traceback" not in r.stderr
