"""Index throughput (chunks/s) against the engine's raw throughput on the same chunks.

    python benchmarks/index_throughput.py [--model offline] [--lines 4000] [--repeats 2]
                                          [--out benchmarks/results/index_throughput.json]

A tree of real code (the first files of the installed Python standard library, in name order, up to
``--lines`` lines) is indexed from nothing into a fresh index directory with one loaded Embedder, in
two ways: counting tokens once per file from offsets (what the indexer does) and, for comparison,
counting every candidate piece exactly with its own tokenizer call (what it did before). Then the
same chunks are embedded by ``Embedder.encode`` alone: the engine's raw throughput, the ceiling of
an index run. Tokenizer calls are counted; the run's phases come from the index report. Runs are
interleaved (``--repeats`` rounds) after a warm-up index run (store start, grammars); the best of
each is kept, and each round's index run is also set against that round's engine run (the paired ratios, whose
median is the steadier figure); as other jobs may share the CPU, each figure also has its process CPU time. The
chunking alone (both ways of counting, no embedding) is timed separately: the part that changed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from codesift.testing import ForwardingEncoder


def make_tree(root: Path, lines: int) -> tuple[int, int]:
    """Copy standard-library modules into ``root`` until ``lines`` lines; returns (files, lines)."""
    src = Path(os.__file__).parent
    root.mkdir(parents=True, exist_ok=True)
    n_files = n_lines = 0
    for path in sorted(src.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        (root / path.name).write_text(text, encoding="utf-8")
        n_files += 1
        n_lines += text.count("\n")
        if n_lines >= lines:
            break
    return n_files, n_lines


class CallCounts(ForwardingEncoder):
    """The Embedder, counting its tokenizer calls; with ``offsets`` False it has no offsets, so the chunker
    counts every candidate piece with a tokenizer call (what the indexer did before)."""

    def __init__(self, emb) -> None:
        super().__init__(emb)
        self.offsets, self.count_calls, self.span_calls = True, 0, 0

    def count_tokens(self, texts, task="nl2code", role="query"):
        self.count_calls += 1
        return super().count_tokens(texts, task=task, role=role)

    def token_spans(self, text, task="nl2code", role="query"):
        if not self.offsets:
            return None
        self.span_calls += 1
        return super().token_spans(text, task=task, role=role)

    def reset(self, per_piece: bool = False) -> None:
        self.count_calls = self.span_calls = 0
        self.offsets = not per_piece


def index_run(calls: CallCounts, tree: Path, work: Path, per_piece: bool) -> dict:
    from codesift.index import IndexConfig, build_index

    index_dir = work / ("ix-piece" if per_piece else "ix-file")
    shutil.rmtree(index_dir, ignore_errors=True)
    calls.reset(per_piece)
    t, c = time.perf_counter(), time.process_time()
    report = build_index(tree, index_dir=index_dir, config=IndexConfig(model="bench"), embedder=calls)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    other = seconds - report.embed_seconds - report.store_seconds - report.walk_seconds
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "chunks": report.chunks_total,
            "chunks_per_s": round(report.chunks_total / seconds, 2), "chunks_per_cpu_s": round(report.chunks_total / cpu, 2),
            "embed_s": round(report.embed_seconds, 2), "store_s": round(report.store_seconds, 2),
            "walk_s": round(report.walk_seconds, 2), "chunk_and_count_s": round(other, 2),
            "tokenizer_calls": calls.count_calls + calls.span_calls, "count_calls": calls.count_calls,
            "span_calls": calls.span_calls}


def chunk_texts(emb, tree: Path) -> list[str]:
    """The chunks the indexer makes of ``tree``, in file order."""
    from codesift.data.chunking import chunk_text
    from codesift.index.indexer import DocumentTokens

    counter = DocumentTokens(emb)
    limit = min(512, emb.max_length)
    texts = []
    for path in sorted(tree.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        texts += [c.text for c in chunk_text(text, path.name, "python", max_tokens=limit, counter=counter)]
    return texts


def chunking_run(calls: CallCounts, tree: Path, per_piece: bool) -> dict:
    calls.reset(per_piece)
    t, c = time.perf_counter(), time.process_time()
    texts = chunk_texts(calls, tree)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "chunks": len(texts),
            "tokenizer_calls": calls.count_calls + calls.span_calls}


def engine_run(emb, texts: list[str]) -> dict:
    t, c = time.perf_counter(), time.process_time()
    emb.encode(texts, task="nl2code", role="document", normalize=True, truncate=True, show_progress=False)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "chunks": len(texts),
            "chunks_per_s": round(len(texts) / seconds, 2), "chunks_per_cpu_s": round(len(texts) / cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="offline")
    ap.add_argument("--lines", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/index_throughput.json")
    args = ap.parse_args()

    import warnings

    from codesift.model.embedder import Embedder

    warnings.filterwarnings("ignore")
    emb = Embedder(args.model)
    calls = CallCounts(emb)
    work = Path(tempfile.mkdtemp(prefix="cs_throughput_"))
    n_files, n_lines = make_tree(work / "tree", args.lines)
    texts = chunk_texts(emb, work / "tree")
    chunking = {"per_file": chunking_run(calls, work / "tree", per_piece=False),
                "per_piece": chunking_run(calls, work / "tree", per_piece=True)}
    print(f"chunking only: {chunking}", file=sys.stderr, flush=True)
    make_tree(work / "warm", 1)  # warm-up: the store's first start, grammars, the model's first batches
    index_run(calls, work / "warm", work / "warm", per_piece=False)
    runs: dict[str, list[dict]] = {"engine": [], "index_per_file": [], "index_per_piece": []}
    for r in range(args.repeats):
        runs["engine"].append(engine_run(emb, texts))
        runs["index_per_file"].append(index_run(calls, work / "tree", work, per_piece=False))
        runs["index_per_piece"].append(index_run(calls, work / "tree", work, per_piece=True))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['chunks_per_s']} chunks/s" for k, v in runs.items()),
              file=sys.stderr, flush=True)
    best = {k: max(v, key=lambda x: x["chunks_per_s"]) for k, v in runs.items()}
    engine = best["engine"]["chunks_per_s"]
    result = {
        "model": emb.name, "dtype": str(emb.dtype).replace("torch.", ""), "files": n_files, "lines": n_lines,
        "chunk_limit": min(512, emb.max_length), "chunking_only": chunking, "best": best, "runs": runs,
        "index_vs_engine": {k: round(best[k]["chunks_per_s"] / engine, 3) for k in ("index_per_file", "index_per_piece")},
        "index_vs_engine_cpu": {k: round(best[k]["chunks_per_cpu_s"] / best["engine"]["chunks_per_cpu_s"], 3)
                                for k in ("index_per_file", "index_per_piece")},
        # each round's index run against the engine run just before it: steadier than best against best
        "index_vs_engine_paired": {k: [round(e["seconds"] / x["seconds"], 3) for e, x in zip(runs["engine"], runs[k])]
                                   for k in ("index_per_file", "index_per_piece")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_at_end": os.getloadavg()},
    }
    print(f"{'':18} {'chunks/s':>9} {'seconds':>8} {'cpu s':>7} {'tokenizer calls':>16} {'of engine':>10} {'(cpu)':>7}")
    for k in ("engine", "index_per_file", "index_per_piece"):
        b = best[k]
        ratio = f"{b['chunks_per_s'] / engine:.1%}"
        cpu_ratio = f"{b['chunks_per_cpu_s'] / best['engine']['chunks_per_cpu_s']:.1%}"
        print(f"{k:18} {b['chunks_per_s']:>9} {b['seconds']:>8} {b['cpu_s']:>7} {b.get('tokenizer_calls', '-'):>16} "
              f"{ratio:>10} {cpu_ratio:>7}")
    for k, ratios in result["index_vs_engine_paired"].items():
        print(f"{k}: paired rounds {ratios}, median {statistics.median(ratios):.1%}")
    for k, v in chunking.items():
        print(f"chunking {k:9} {v['seconds']:>8} s wall {v['cpu_s']:>7} s cpu {v['tokenizer_calls']:>6} tokenizer calls")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
