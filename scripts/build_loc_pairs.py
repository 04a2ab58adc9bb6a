"""Mine localization pairs (commit message -> changed chunks at the parent, with in-repo hard negatives) from
many repositories, resumably, into one training file, a held-out file and a manifest (DATA.md, issue 19).

    PYTHONPATH=src HF_HUB_OFFLINE=1 nice -n 5 python scripts/build_loc_pairs.py \\
        --repos configs/loc-pairs-repos.txt --mirror /work/.mirror --out /work/data \\
        --exclude '/work/shared/data/retrieval/*' --refuse configs/localization-reserved.txt \\
        --refuse /work/locbench_repos.txt --workers 2

One repository at a time per worker (``codesift.data.commit_chunks.changed_chunk_pairs``, chunked as
``codesift index`` chunks with the default model's tokenizer, lexical negatives from ``eval.bm25``), each
decontaminated (query, document, both together; a negative that matches an evaluation text is dropped)
against every ``--exclude`` BEIR folder and the queries of the localization benchmark, then written to
``OUT/loc-pairs/OWNER+NAME.jsonl`` with its stats beside it: a repository whose file exists is not mined
again. ``--held-out`` repositories go to ``loc-pairs-heldout.jsonl`` only. When the training repositories
first reach ``--stage1-pairs`` pairs from ``--stage1-repos`` repositories, ``loc-pairs-stage1.jsonl`` and
``STAGE1_READY`` are written; at the end ``loc-pairs.jsonl``, ``loc-pairs-manifest.json`` and ``FULL_READY``.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import sys
import time
from pathlib import Path

LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENSE.rst", "LICENCE", "COPYING", "License.txt",
                 "MIT-LICENSE",
                 "LICENSE.MIT", "LICENSE.APACHE2", "MIT-LICENSE.txt", "MIT.txt",
                 "license", "LICENSE-MIT", "LICENSE-APACHE", "license.md", "COPYING.md")
PERMISSIVE = ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "curl", "Unlicense", "CC0-1.0", "BSL-1.0")


def licence_of(repo: Path, rev: str = "HEAD") -> str:
    """The SPDX-like name of the licence at ``rev``, from its licence files' words ('unknown' when none is read)."""
    from codesift.data.commits import GitError, git

    found = []
    for name in LICENCE_FILES:
        try:
            text = git(repo, "show", f"{rev}:{name}")
        except GitError:
            continue
        found.append(_classify(text))
    names = list(dict.fromkeys(n for n in found if n != "unknown"))
    return " OR ".join(names) if names else "unknown"


def _classify(text: str) -> str:
    low = " ".join(text.lower().split())
    if "european union public licence" in low:
        return "EUPL-1.2"
    title = low[:300]
    if "gnu affero" in title:
        return "AGPL"
    if "gnu lesser general public" in title:
        return "LGPL"
    if "gnu general public license" in title:
        return "GPL"
    if "mozilla public license" in low:
        return "MPL-2.0"
    if "apache license" in low and "version 2.0" in low:
        return "Apache-2.0"
    if "permission is hereby granted, free of charge" in low:
        return "MIT"
    if "redistribution and use in source and binary forms" in low:
        return "BSD-3-Clause" if "neither the name" in low or "names of its contributors" in low else "BSD-2-Clause"
    if "permission to use, copy, modify, and" in low:  # ISC ("and/or distribute"), curl ("and distribute")
        return "curl" if "daniel stenberg" in low else "ISC"
    if "unlicense" in low or "this is free and unencumbered software" in low:
        return "Unlicense"
    if "boost software license" in low:
        return "BSL-1.0"
    return "unknown"


def read_repo_list(path: Path) -> list[str]:
    """``owner/name`` per line (``#`` comments)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


# ------------------------------------------------------------------------------------ one repository

_STATE: dict = {}


def _init_worker(exclude: list[str], reserved: list[str], cfg_kw: dict) -> None:
    import logging

    from codesift.data.commit_chunks import ChunkPairConfig
    from codesift.data.decontam import Decontaminator, read_beir_texts
    from codesift.data.commits import LOCALIZATION_CASES
    from codesift.data.jsonl import read_jsonl
    from codesift.index.indexer import DocumentTokens
    from codesift.model.embedder import Embedder

    from codesift.index.config import IndexConfig

    logging.basicConfig(level=logging.WARNING)
    embedder = Embedder(None, device="cpu")  # the model `codesift index` uses by default on this machine
    texts = [kv for folder in exclude for kv in read_beir_texts(folder)]
    if LOCALIZATION_CASES.is_file():  # the benchmark's queries are evaluation texts too
        texts += [(f"localization/{row['commit']}", row["query"]) for _, row in read_jsonl(LOCALIZATION_CASES)]
    _STATE.update(
        embedder=embedder, counter=DocumentTokens(embedder), reserved=set(reserved),
        cfg=ChunkPairConfig(**cfg_kw, max_tokens=min(IndexConfig().max_tokens, embedder.max_length)),  # chunk_limit
        decontam=Decontaminator(texts), eval_texts=len(texts),
    )


def mine_repo(job: tuple[str, str, str, dict]) -> dict:
    """Mine one repository into ``out_dir/OWNER+NAME.jsonl`` (+ ``.json`` stats); returns the stats.

    ``job``'s dict overrides the run's caps for this repository and may pin its ``commit``."""
    from dataclasses import replace

    from codesift.data.commit_chunks import changed_chunk_pairs
    from codesift.data.commits import git
    from codesift.data.mining import MineReport
    from codesift.eval.bm25 import BM25Index

    name, mirror, out_dir, overrides = job
    overrides = dict(overrides)
    repo = Path(mirror) / name.replace("/", "+") / "repo"
    out = Path(out_dir) / f"{name.replace('/', '+')}.jsonl"
    t0 = time.time()
    stats: dict = {"repo": name, "path": str(repo)}
    try:
        head = git(repo, "rev-parse", overrides.pop("commit", None) or "HEAD").strip()
        stats.update(commit=head, licence=licence_of(repo, head))
        if not any(p in PERMISSIVE for p in stats["licence"].split(" OR ")):
            raise ValueError(f"licence {stats['licence']} is not a permissive one")
        report = MineReport()
        cfg = replace(_STATE["cfg"], rev=head, **overrides)
        pairs = changed_chunk_pairs(repo, name, cfg, report, counter=_STATE["counter"], make_index=BM25Index,
                                    reserved=_STATE["reserved"])
    except Exception as exc:  # one bad repository must not stop the run: it is recorded with its error
        import traceback

        traceback.print_exc()
        stats.update(error=f"{type(exc).__name__}: {exc}", pairs=0)
        Path(out).with_suffix(".json").write_text(json.dumps(stats, indent=1) + "\n")
        out.write_text("")
        return stats
    decontam = _STATE["decontam"]
    kept, dirty, examples, negatives_dropped = [], 0, [], 0
    for pair in pairs:
        hit = (decontam.match(pair.query) or decontam.match(pair.document)
               or decontam.match(pair.query + "\n" + pair.document))
        if hit:
            dirty += 1
            examples.append({"path": pair.path, "match": hit})
            continue
        clean = tuple(n for n in pair.negatives if not decontam.match(n))
        negatives_dropped += len(pair.negatives) - len(clean)
        kept.append(replace(pair, negatives=clean))
    languages: dict[str, int] = {}
    for pair in kept:
        languages[pair.language] = languages.get(pair.language, 0) + 1
    stats.update(
        pairs=len(kept), with_negatives=sum(1 for p in kept if p.negatives),
        negatives=sum(len(p.negatives) for p in kept), languages=dict(sorted(languages.items(), key=lambda kv: -kv[1])),
        language=max(languages, key=languages.get) if languages else "",
        commits_read=report.commits.get(name, 0), snapshot=report.snapshots.get(name),
        dropped=dict(sorted(report.dropped.items(), key=lambda kv: -kv[1])),
        decontaminated=dirty, decontamination_examples=examples[:10], negatives_decontaminated=negatives_dropped,
        eval_texts=_STATE["eval_texts"], max_tokens=cfg.max_tokens, chunk_model=_STATE["embedder"].name,
        max_commits=cfg.max_commits, max_snapshot_files=cfg.max_snapshot_files, max_file_bytes=cfg.max_file_bytes,
        seconds=round(time.time() - t0, 1),
    )
    tmp = out.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for pair in kept:
            fh.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
    out.with_suffix(".json").write_text(json.dumps(stats, indent=1) + "\n")
    tmp.replace(out)  # last: the .jsonl marks the repository done
    return stats


# ------------------------------------------------------------------------------------ combining


def combine(repos: list[str], held_out: set[str], per_repo: Path, train_out: Path, heldout_out: Path | None,
            decontam=None) -> dict:
    """Concatenate the per-repository files (exact (query, document) repeats across repositories dropped), checked
    once more against ``decontam`` (a ``Decontaminator``) when given: evaluation sets added after a repository
    was mined still count."""
    import hashlib

    seen: set[bytes] = set()
    counts = {"train": 0, "held_out": 0, "duplicates": 0, "with_negatives": 0}
    if decontam is not None:
        counts.update(final_decontaminated=0, final_negatives_decontaminated=0, final_examples=[])
    tmp_train = train_out.with_suffix(".jsonl.tmp")
    tmp_held = heldout_out.with_suffix(".jsonl.tmp") if heldout_out else None
    with tmp_train.open("w", encoding="utf-8") as train, \
            (tmp_held.open("w", encoding="utf-8") if tmp_held else open("/dev/null", "w")) as held:
        for name in repos:
            file = per_repo / f"{name.replace('/', '+')}.jsonl"
            if not file.is_file():
                continue
            for line in file.open(encoding="utf-8"):
                row = json.loads(line)
                key = hashlib.blake2b((row["query"] + "\0" + row["document"]).encode(), digest_size=16).digest()
                if key in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(key)
                if decontam is not None:
                    # Decontaminator.match remembers its answers: negatives repeat across pairs
                    hit = decontam.match(row["query"]) or decontam.match(row["document"]) or decontam.match(
                        row["query"] + "\n" + row["document"])
                    if hit:
                        counts["final_decontaminated"] += 1
                        counts["final_examples"] = (counts["final_examples"] + [f"{name} {row['path']}: {hit}"])[:20]
                        continue
                    clean = [n for n in row.get("negatives", []) if not decontam.match(n)]
                    if len(clean) < len(row.get("negatives", [])):
                        counts["final_negatives_decontaminated"] += len(row["negatives"]) - len(clean)
                        row["negatives"] = clean
                        if not clean:
                            del row["negatives"]
                        line = json.dumps(row, ensure_ascii=False) + "\n"
                if name in held_out:
                    held.write(line)
                    counts["held_out"] += 1
                else:
                    train.write(line)
                    counts["train"] += 1
                    counts["with_negatives"] += bool(row.get("negatives"))
    tmp_train.replace(train_out)
    if tmp_held:
        tmp_held.replace(heldout_out)
    return counts


def manifest(repos: list[str], held_out: set[str], per_repo: Path, cfg_kw: dict, counts: dict, argv: list[str]) -> dict:
    """The manifest: one row per repository (commit, licence, language, pairs), the held-out list, the totals."""
    rows = []
    for name in repos:
        stats_file = per_repo / f"{name.replace('/', '+')}.json"
        if not stats_file.is_file():
            continue
        s = json.loads(stats_file.read_text())
        rows.append({k: s.get(k) for k in ("repo", "commit", "licence", "language", "pairs", "with_negatives",
                                          "commits_read", "max_commits", "snapshot", "max_snapshot_files",
                                          "max_file_bytes",
                                          "decontaminated", "error")}
                    | {"held_out": name in held_out})
    used = [r for r in rows if r["pairs"]]
    languages: dict[str, int] = {}
    for name in repos:
        stats_file = per_repo / f"{name.replace('/', '+')}.json"
        if stats_file.is_file() and name not in held_out:
            for lang, n in json.loads(stats_file.read_text()).get("languages", {}).items():
                languages[lang] = languages.get(lang, 0) + n
    return {
        "command": "python scripts/build_loc_pairs.py " + " ".join(argv),
        "evaluation_sets": [],  # set by main
        "config": cfg_kw | {"note": "the caps of the last run; each repository's own are in its row"},
        "held_out": sorted(held_out),
        "totals": counts | {"repositories": len(used),
                            "training_repositories": sum(1 for r in used if not r["held_out"]),
                            "repository_languages": len({r["language"] for r in used}),
                            "pairs_by_language": dict(sorted(languages.items(), key=lambda kv: -kv[1]))},
        "repositories": rows,
    }


def markdown_table(man: dict) -> str:
    """The manifest as DATA.md's table: one row per repository, then the totals."""
    lines = ["| repository | commit | licence | language | commits read | snapshot chunks (file cap) | pairs | "
             "with negatives | split |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(man["repositories"], key=lambda r: (r["held_out"], (r["language"] or "~"), r["repo"].lower())):
        split = "held out" if r["held_out"] else ("-" if not r["pairs"] else "train")
        note = f" ({r['error']})" if r.get("error") else ""
        snap = f"{(r.get('snapshot') or {}).get('chunks', 0):,} ({r.get('max_snapshot_files') or '-'})"
        lines.append(f"| {r['repo']} | {(r['commit'] or '')[:12]} | {r['licence']} | {r['language'] or '-'} | "
                     f"{r['commits_read'] or 0:,} | {snap} | {r['pairs']:,} | {r['with_negatives'] or 0:,} | "
                     f"{split}{note} |")
    t = man["totals"]
    lines.append(f"| **total** | | | | | | **{t['train'] + t['held_out']:,}** | | train {t['train']:,}, "
                 f"held out {t['held_out']:,} |")
    return "\n".join(lines) + "\n"


def summary_markdown(man: dict, per_repo: Path) -> str:
    """Totals, languages, negatives, what the filters dropped, decontamination and lengths (from the per-repository
    stats and files)."""
    import statistics

    dropped: dict[str, int] = {}
    negatives: dict[int, int] = {}
    decontaminated = negatives_decontaminated = eval_texts = 0
    query_len, doc_len = [], []
    for row in man["repositories"]:
        stem = row["repo"].replace("/", "+")
        stats = json.loads((per_repo / f"{stem}.json").read_text())
        for k, v in stats.get("dropped", {}).items():
            dropped[k] = dropped.get(k, 0) + v
        decontaminated += stats.get("decontaminated", 0)
        negatives_decontaminated += stats.get("negatives_decontaminated", 0)
        eval_texts = max(eval_texts, stats.get("eval_texts", 0))
        for line in (per_repo / f"{stem}.jsonl").open(encoding="utf-8"):
            r = json.loads(line)
            n = len(r.get("negatives", []))
            negatives[n] = negatives.get(n, 0) + 1
            query_len.append(len(r["query"]))
            doc_len.append(len(r["document"]))

    def pct(values: list[int]) -> str:
        q = statistics.quantiles(values, n=20)
        return f"{q[0]:.0f} / {statistics.median(values):.0f} / {q[-1]:.0f}"

    t = man["totals"]
    langs = ", ".join(f"{k} {v:,}" for k, v in t["pairs_by_language"].items())
    return "\n".join([
        f"Repositories mined: {t['repositories']} ({t['training_repositories']} for training, "
        f"{len(man['held_out'])} held out: {', '.join(man['held_out'])}), main languages: {t['repository_languages']}.",
        f"Pairs: **{t['train']:,}** for training, {t['held_out']:,} held out; {t['duplicates']:,} exact repeats across "
        f"repositories dropped. Training pairs by language: {langs}.",
        "Negatives per pair (all pairs): " + ", ".join(f"{k}: {v:,}" for k, v in sorted(negatives.items())) + ".",
        f"Lengths in characters (p5 / p50 / p95): query {pct(query_len)}, document {pct(doc_len)}.",
        "Dropped: " + ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])) + ".",
        f"Decontamination: {eval_texts:,} evaluation texts (the four sets of `../shared/data/retrieval/` and the "
        f"localization benchmark's queries); {decontaminated:,} pairs dropped, {negatives_decontaminated:,} "
        "negatives dropped.",
    ] + ([
        f"Last check of the combined files against {len(man['evaluation_sets'])} evaluation sets "
        f"({', '.join(Path(e).name for e in man['evaluation_sets'])}): {t['final_decontaminated']:,} pairs and "
        f"{t['final_negatives_decontaminated']:,} negatives dropped."] if "final_decontaminated" in t else [])) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=Path, required=True, help="owner/name per line")
    ap.add_argument("--mirror", default="/work/.mirror", help="folder of OWNER+NAME/repo bare mirrors")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--exclude", action="append", default=[], help="BEIR folders (globs) to decontaminate against")
    ap.add_argument("--refuse", action="append", default=[], type=Path,
                    help="files of owner/name never to mine (besides the localization benchmark's); missing: ignored")
    ap.add_argument("--held-out", default="marshmallow-code/marshmallow,labstack/echo,fastify/fastify,"
                    "seanmonstar/reqwest,jhy/jsoup", help="comma-separated repositories kept out of training")
    ap.add_argument("--max-commits", type=int, default=1500)
    ap.add_argument("--snapshot-files", type=int, default=400, help="source files of the negatives' snapshot, at most")
    ap.add_argument("--max-file-bytes", type=int, default=2_000_000,
                    help="larger files are not chunked (the index's limit is 2,000,000; lower bounds the run time)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--caps-from", type=Path, help="a manifest: mine each repository at its commit with its caps (rebuild)")
    ap.add_argument("--combine-only", action="store_true",
                    help="mine nothing: combine the repositories done so far (files, manifest, table)")
    ap.add_argument("--final", action="store_true",
                    help="with --combine-only: the set is final (FULL_READY) even if some repositories were not mined; "
                    "the manifest lists them as not_mined")
    ap.add_argument("--stage1-pairs", type=int, default=15000)
    ap.add_argument("--stage1-repos", type=int, default=30)
    args = ap.parse_args(argv)
    raw_argv = sys.argv[1:] if argv is None else argv

    from codesift.data.commits import reserved_repositories

    exclude = sorted({d for pattern in args.exclude for d in glob.glob(pattern)})
    reserved = reserved_repositories(args.refuse)
    held_out = {r.strip() for r in args.held_out.split(",") if r.strip()}
    repos = read_repo_list(args.repos)
    refused = [r for r in repos if r.lower() in reserved]
    repos = [r for r in repos if r.lower() not in reserved]
    for r in refused:
        print(f"refused (localization benchmark): {r}", file=sys.stderr)
    order = [r for r in repos if r in held_out] + [r for r in repos if r not in held_out]
    per_repo = args.out / "loc-pairs"
    per_repo.mkdir(parents=True, exist_ok=True)
    cfg_kw = {"max_commits": args.max_commits, "max_snapshot_files": args.snapshot_files,
              "max_file_bytes": args.max_file_bytes}
    pinned = {}  # --caps-from: each repository at its recorded commit, with its recorded caps
    if args.caps_from:
        caps = ("max_commits", "max_snapshot_files", "max_file_bytes", "commit")
        pinned = {row["repo"]: {k: row[k] for k in caps if row.get(k) is not None}
                  for row in json.loads(args.caps_from.read_text())["repositories"]}
    todo = [(r, args.mirror, str(per_repo), pinned.get(r, {})) for r in order
            if not (per_repo / f"{r.replace('/', '+')}.jsonl").is_file()]
    print(f"{len(order)} repositories, {len(order) - len(todo)} done already, {len(exclude)} evaluation sets",
          file=sys.stderr)

    def train_totals() -> tuple[int, int]:
        n = done_repos = 0
        for r in order:
            f = per_repo / f"{r.replace('/', '+')}.json"
            if r not in held_out and f.is_file() and (per_repo / f"{r.replace('/', '+')}.jsonl").is_file():
                pairs = json.loads(f.read_text()).get("pairs", 0)
                n += pairs
                done_repos += bool(pairs)
        return n, done_repos

    def maybe_stage1() -> None:
        if (args.out / "STAGE1_READY").exists():
            return
        n, k = train_totals()
        if n >= args.stage1_pairs and k >= args.stage1_repos:
            counts = combine(order, held_out, per_repo, args.out / "loc-pairs-stage1.jsonl",
                             args.out / "loc-pairs-heldout.jsonl")  # the held-out repositories are mined first
            (args.out / "loc-pairs-stage1-manifest.json").write_text(
                json.dumps(manifest(order, held_out, per_repo, cfg_kw, counts, raw_argv), indent=1) + "\n")
            (args.out / "STAGE1_READY").write_text(json.dumps(counts) + "\n")
            print(f"STAGE 1: {counts}", file=sys.stderr, flush=True)

    t0 = time.time()
    if todo and not args.combine_only:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_init_worker, initargs=(exclude, sorted(reserved), cfg_kw)) as pool:
            for i, stats in enumerate(pool.imap_unordered(mine_repo, todo), start=1):
                error = f" {stats['error']}" if "error" in stats else ""
                print(f"[{i}/{len(todo)} {time.time() - t0:.0f}s] {stats['repo']}: {stats.get('pairs', 0)} pairs"
                      f" ({stats.get('language', '')}, {stats.get('seconds', 0)} s){error}", file=sys.stderr,
                      flush=True)
                maybe_stage1()
    maybe_stage1()
    complete = all((per_repo / f"{r.replace('/', '+')}.jsonl").is_file() for r in order)
    decontam = None
    if args.combine_only and exclude:  # the last check, against every evaluation set named now
        from codesift.data.commits import LOCALIZATION_CASES
        from codesift.data.decontam import Decontaminator, read_beir_texts
        from codesift.data.jsonl import read_jsonl

        texts = [kv for folder in exclude for kv in read_beir_texts(folder)]
        if LOCALIZATION_CASES.is_file():
            texts += [(f"localization/{row['commit']}", row["query"]) for _, row in read_jsonl(LOCALIZATION_CASES)]
        decontam = Decontaminator(texts)
        print(f"final decontamination against {len(exclude)} sets, {len(texts):,} texts", file=sys.stderr)
    counts = combine(order, held_out, per_repo, args.out / "loc-pairs.jsonl", args.out / "loc-pairs-heldout.jsonl",
                     decontam)
    man = manifest(order, held_out, per_repo, cfg_kw, counts, raw_argv)
    man["not_mined"] = [r for r in order if not (per_repo / f"{r.replace('/', '+')}.jsonl").is_file()]
    man["evaluation_sets"] = exclude
    man["refused"] = refused
    (args.out / "loc-pairs-manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    (args.out / "loc-pairs-table.md").write_text(summary_markdown(man, per_repo) + "\n" + markdown_table(man))
    if complete or (args.combine_only and args.final):
        (args.out / "FULL_READY").write_text(json.dumps(counts) + "\n")
    print(f"{'FULL' if complete or (args.combine_only and args.final) else 'SO FAR'}: {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
