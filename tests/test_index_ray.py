"""`codesift index REPO1 REPO2 ... --ray`: a real local Ray cluster (2 CPUs) and a tiny random model; nothing mocked.

Indexes built over Ray are compared with the same trees indexed one by one in this process (what `codesift index
REPO` does): the same files, chunks and settings, the same search results, and vectors within 1e-5 (the workers
batch the chunks differently, so padding and summation order differ; the vectors are unit length).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codesift.index import IndexConfig, open_index
from codesift.index.config import DB_NAME, SHARED_COLLECTION, collection_name
from codesift.index.fanout import IndexJob, index_repositories
from codesift.index.indexer import Indexer
from codesift.index.manifest import Manifest
from codesift.model.distributed import RayEmbedError
from codesift.testing import fail_once_encoder
from test_model_hardening import assert_one_error_line, run_main

TOL = 1e-5
SHARD = 3
QUERIES = ("sum of values", "parse the header line", "retry a request")


def make_repo(parent: Path, name: str, files: int = 6) -> Path:
    """A small tree whose paths and words name it, with functions of different lengths."""
    root = parent / name
    (root / name).mkdir(parents=True)
    for i in range(files):
        body = "".join(f"    total_{j} = values[{j}] * {i}  # {name} step {j}\n" for j in range(1 + 3 * i))
        (root / name / f"mod{i}.py").write_text(
            f'def {name}_sum_{i}(values):\n    """Sum of values for {name}, part {i}."""\n{body}    return total_0\n\n\n'
            f"def {name}_parse_{i}(line):\n    return line.split(':', {i})\n")
    (root / "README.md").write_text(f"# {name}\n\nRetry a request, parse the header line.\n")
    return root


def config(model: Path, **kw) -> IndexConfig:
    return IndexConfig(model=str(model), dtype="float32", **kw)


def snapshot(index_dir: Path) -> dict:
    """What an index holds: settings, files, chunks, their cached vectors, and its answers to QUERIES."""
    with open_index(index_dir) as ix:
        rows = sorted(ix.store.rows(["path", "start_line", "end_line", "content_hash"]), key=lambda r: r["id"])
        fingerprint = ix.manifest.get_meta()["fingerprint"]
        hashes = sorted({r["content_hash"] for r in rows})
        vectors = ix.manifest.cached_vectors(hashes, fingerprint)
        settings = {k: v for k, v in ix.config.to_meta().items() if k not in ("collection", "store_uri")}
        return {"settings": settings, "fingerprint": fingerprint, "totals": ix.manifest.totals(),
                "files": {p: (r.sha256, r.language, r.n_chunks, r.status) for p, r in ix.manifest.files().items()},
                "rows": rows, "vectors": np.stack([vectors[h] for h in hashes]),
                "hits": {q: [(h.path, h.start_line) for h in ix.search(q, limit=5)] for q in QUERIES}}


def assert_same_index(got: dict, want: dict) -> None:
    for key in ("settings", "fingerprint", "totals", "files", "rows", "hits"):
        assert got[key] == want[key], key
    assert got["vectors"].shape == want["vectors"].shape
    assert np.abs(got["vectors"] - want["vectors"]).max() < TOL
    assert got["totals"]["chunks"] > 2 * SHARD  # several shards a repository


def one_by_one(roots: list[Path], parent: Path, cfg: IndexConfig) -> list[dict]:
    """Each tree indexed alone, without Ray, into PARENT/ref-NAME; their snapshots."""
    out = []
    for root in roots:
        index_dir = parent / f"ref-{root.name}"
        index_repositories([IndexJob(root, index_dir, cfg)])
        out.append(snapshot(index_dir))
    return out


def planned(root: Path, cfg: IndexConfig, scratch: Path) -> dict[str, str]:
    """The chunks a first run embeds for ``root`` (hash -> text), in shard order (planned in a scratch index)."""
    ix = Indexer(root, scratch, cfg)
    try:
        return ix.chunks_to_embed()
    finally:
        ix.close()


def embedded_first_texts(calls: Path) -> list[str]:
    """First text of each batch the workers embedded (FailOnceEncoder's log)."""
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


# Each job starts workers that import torch: seconds on an idle machine, minutes on a loaded one.
@pytest.mark.timeout(1800)
def test_two_repositories_on_ray_resume_and_retry(ray_cluster, tiny_qwen_dir, tmp_path):
    """Two trees over Ray (SQLite stores): a shard of the second fails for good, the rerun embeds only what is
    missing (one of its shards fails once and is retried), and both indexes equal those built one by one."""
    cfg = config(tiny_qwen_dir)
    alpha, beta = make_repo(tmp_path, "alpha"), make_repo(tmp_path, "beta")
    want = one_by_one([alpha, beta], tmp_path, cfg)
    beta_chunks = planned(beta, cfg, tmp_path / "plan-beta")
    beta_texts = list(beta_chunks.values())
    assert len(beta_texts) > 2 * SHARD
    jobs = [IndexJob(alpha, None, cfg), IndexJob(beta, None, cfg)]

    # beta's second shard fails with no retry left: the run stops naming it, after writing alpha whole
    fails = functools.partial(fail_once_encoder, marker=beta_texts[SHARD], flag=tmp_path / "failed-1")
    with pytest.raises(RayEmbedError, match=r"shard 2 of \d+ of .*beta .*failed 1 time; .*run the same command again"):
        index_repositories(jobs, ray="local", workers=1, shard_size=SHARD, retries=0, make_encoder=fails)
    assert_same_index(snapshot(alpha / ".codesift"), want[0])
    manifest = Manifest(beta / ".codesift" / DB_NAME)
    assert manifest.totals()["files"] == 0  # beta was not written
    cached = manifest.cached_hashes(list(beta_chunks), want[1]["fingerprint"])
    manifest.close()
    assert set(list(beta_chunks)[:SHARD]) <= cached  # beta's first shard was kept for the rerun
    missing = [text for h, text in beta_chunks.items() if h not in cached]
    assert beta_texts[SHARD] in missing

    # the rerun: alpha is done, beta's missing chunks only; the first of their shards fails once and is retried
    calls = tmp_path / "calls.log"
    flaky = functools.partial(fail_once_encoder, marker=missing[0], flag=tmp_path / "failed-2", calls=calls)
    result = index_repositories(jobs, ray="local", workers=1, shard_size=SHARD, retries=1, make_encoder=flaky)
    assert result.workers == 1 and result.retried == {(1, 0): 1}
    assert result.chunks_embedded == len(missing)
    assert [r.chunks_embedded for r in result.reports] == [0, len(missing)]
    assert set(embedded_first_texts(calls)) <= set(missing)
    assert_same_index(snapshot(alpha / ".codesift"), want[0])
    assert_same_index(snapshot(beta / ".codesift"), want[1])

    # nothing changed: no Ray worker is started
    again = index_repositories(jobs, ray="local", shard_size=SHARD)
    assert again.workers == 0 and [r.chunks_embedded for r in again.reports] == [0, 0]


@pytest.mark.timeout(1800)
def test_cli_indexes_repositories_into_one_milvus(ray_cluster, tiny_qwen_dir, tmp_path):
    """`codesift index A --repos-file F --ray HOST:PORT --store-uri shared.db`: one Milvus Lite file, a collection
    per index, each index as it would be alone; plain `codesift index A` then updates it incrementally."""
    pytest.importorskip("milvus_lite")
    alpha, beta = make_repo(tmp_path, "alpha"), make_repo(tmp_path, "beta")
    want = one_by_one([alpha, beta], tmp_path, config(tiny_qwen_dir, store_uri=str(tmp_path / "ref.db")))
    listed = tmp_path / "repos.txt"
    listed.write_text(f"# the second repository\n{beta}\n\n{alpha}\n")  # alpha twice: indexed once
    shared = tmp_path / "shared.db"
    address = ray_cluster.get_runtime_context().gcs_address
    r = subprocess.run([sys.executable, "-m", "codesift.cli", "index", str(alpha), "--repos-file", str(listed),
                        "--ray", address, "--workers", "1", "--shard-size", str(SHARD), "--store-uri", str(shared),
                        "--model", str(tiny_qwen_dir), "--dtype", "float32", "--json"],
                       capture_output=True, text=True, check=False, timeout=900, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    reports = json.loads(r.stdout)
    assert [Path(x["root"]).name for x in reports] == ["alpha", "beta"]
    total = sum(x["chunks_embedded"] for x in reports)
    assert total == sum(w["totals"]["chunks"] for w in want)  # every chunk embedded once, none from a cache
    assert f"embedded {total:,} chunks in" in r.stderr and "on 1 Ray workers" in r.stderr

    collections = set()
    for root, reference in zip((alpha, beta), want):
        got = snapshot(root / ".codesift")
        assert_same_index(got, reference)
        assert all(path.startswith(f"{root.name}/") or path == "README.md" for path in got["files"])
        with open_index(root / ".codesift") as ix:
            assert ix.config.store_uri == str(shared)
            assert all(h.path.startswith(f"{root.name}/") for h in ix.search(f"{root.name} sum", limit=20)
                       if h.path != "README.md")  # only its own chunks
            collections.add(ix.config.collection)
    assert collections == {collection_name(alpha, alpha / ".codesift"), collection_name(beta, beta / ".codesift")}

    # incremental, without Ray: one edited file re-embedded, the rest kept
    (alpha / "alpha" / "mod1.py").write_text("def alpha_changed(x):\n    return x + 1\n")
    code, out, err = run_main_json(["index", str(alpha), "--json"])
    assert code == 0, err
    assert out["files_changed"] == 1 and out["chunks_embedded"] == 1 and out["files_deleted"] == 0


def run_main_json(args: list[str]) -> tuple[int, dict, str]:
    r = subprocess.run([sys.executable, "-m", "codesift.cli", *args], capture_output=True, text=True, check=False,
                       timeout=600, env=dict(os.environ))
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else {}), r.stderr


# ---------------------------------------------------------------- without a cluster
def test_several_repositories_without_ray_each_get_their_own_index(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    alpha, beta = make_repo(tmp_path, "alpha", files=2), make_repo(tmp_path, "beta", files=2)
    code, out, err = run_main(["index", str(alpha), str(beta), "--model", str(tiny_qwen_dir), "--json"],
                              monkeypatch, capsys)
    assert code == 0, err
    reports = json.loads(out)
    assert [Path(x["index_dir"]) for x in reports] == [alpha / ".codesift", beta / ".codesift"]
    assert all(x["chunks_embedded"] > 0 for x in reports)


def test_each_index_names_its_own_collection(tmp_path):
    one, other = tmp_path / "a" / "my-repo.git", tmp_path / "b" / "my-repo.git"
    names = {collection_name(one, one / ".codesift"), collection_name(other, other / ".codesift")}
    assert len(names) == 2 and all(n.startswith("codesift_my_repo_git_") for n in names)
    assert all(c.isalnum() or c == "_" for n in names for c in n)
    # an index stored before each index named its own keeps the shared collection it has
    assert IndexConfig.from_meta({"config": {"model": "m"}}).collection == SHARED_COLLECTION


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path, "alpha", files=1)


@pytest.mark.parametrize("args,needles", [
    (["{tmp}/nope", "--ray", "local"], ["nope does not exist", "root of a source tree"]),
    (["{repo}/README.md", "--ray", "local"], ["README.md is not a directory"]),
    (["{repo}", "--repos-file", "{tmp}/none.txt"], ["--repos-file", "none.txt does not exist"]),
    (["{repo}", "--repos-file", "{tmp}/empty.txt"], ["empty.txt lists no source tree"]),
    (["{repo}", "--repos-file", "{tmp}/bad.txt"], ["gone (listed in", "does not exist"]),
    (["{repo}", "{tmp}", "--index", "{tmp}/ix"], ["--index names the index folder of one source tree"]),
    (["{repo}", "--workers", "2"], ["--workers and --shard-size go with --ray"]),
    (["{repo}", "--ray", "127.0.0.1:1"], ["cannot reach a Ray cluster at 127.0.0.1:1", "ray start --head"]),
    (["{repo}", "--ray", "head:port"], ["is not an address"]),
    (["{repo}", "--ray", "local", "--shard-size", "0"], ["--shard-size must be at least 1"]),
])
def test_bad_input_is_one_error_line(repo, tmp_path, monkeypatch, capsys, args, needles):
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    (tmp_path / "bad.txt").write_text(f"{repo}\n{tmp_path}/gone\n")
    args = [a.format(tmp=tmp_path, repo=repo) for a in args]
    code, _, err = run_main(["index", *args], monkeypatch, capsys)
    assert_one_error_line(code, err, *needles)
    assert not (repo / ".codesift").exists()  # nothing was indexed


def test_missing_ray_says_how_to_install(repo, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is not installed
    code, _, err = run_main(["index", str(repo), "--ray", "local"], monkeypatch, capsys)
    assert_one_error_line(code, err, "needs Ray, which is not installed here", "pip install 'codesift[ray]'")
    assert not (repo / ".codesift").exists()
