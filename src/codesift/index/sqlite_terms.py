"""The keyword index of the SQLite store: term postings kept in segments, BM25-scored in memory.

Why not FTS5 (which the store used first): FTS5's ``bm25()`` is evaluated row by row for every chunk that
matches ANY query term, and code queries are made of common words ("get", "file", "error") that match most
chunks: 70 ms a query at 100,000 chunks (docs/search.md). Here a query reads the posting lists of its few
terms (one indexed SELECT) and scores every chunk at once with numpy: a few milliseconds.

Tables, in the index's own SQLite file; every write runs inside the store's transaction:

- ``chunk_bags(seq, n_terms, terms)``: a chunk's ``keyword_text`` terms and their number (its BM25 length);
- ``term_postings(term, segment, seqs, tfs)``: per term and segment, the chunks holding the term (int64
  ``seq``, ascending) and how often (uint16);
- ``term_segments(segment, chunks)``: one segment per write, with the number of chunks it was made of.

A write adds one segment for the chunks it adds. A deleted chunk's postings stay where they are, dead (a query
counts only the chunks the store holds), until a merge drops them. Merges keep the segments few, like a
log-structured merge: ``FANOUT`` segments of one size class (the same power of ``FANOUT`` chunks) become one,
and when the segments were made of more than twice the chunks alive, all of them become one.

The score is the BM25 that FTS5's ``bm25()`` computes (k1 1.2, b 0.75, idf ``ln((N - n + 0.5) / (n + 0.5))``
floored at 1e-6; a repeated query term counts again), with N and n over the chunks alive.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

SQL_IN = "(SELECT value FROM json_each(?))"  # an SQL list from one JSON array parameter: `x IN {SQL_IN}`
K1, B = 1.2, 0.75
FANOUT = 4
MAX_TF = 65535

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk_bags (seq INTEGER PRIMARY KEY, n_terms INTEGER NOT NULL, terms TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS term_postings (term TEXT NOT NULL, segment INTEGER NOT NULL, seqs BLOB NOT NULL,
                                          tfs BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS term_postings_by_term ON term_postings (term, segment);
CREATE INDEX IF NOT EXISTS term_postings_by_segment ON term_postings (segment);
CREATE TABLE IF NOT EXISTS term_segments (segment INTEGER PRIMARY KEY, chunks INTEGER NOT NULL);
"""


def add_chunks(db, chunks: Iterable[tuple[int, str]]) -> None:
    """Store the terms of new chunks ``(seq, terms)`` as one new segment, then merge segments as due."""
    postings: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    bags = []
    for seq, terms in sorted(chunks):
        words = terms.split()
        bags.append((seq, len(words), terms))
        for term, tf in Counter(words).items():
            seqs, tfs = postings[term]
            seqs.append(seq)
            tfs.append(min(tf, MAX_TF))
    if not bags:
        return
    db.executemany("INSERT INTO chunk_bags VALUES (?, ?, ?)", bags)
    segment = _new_segment(db, len(bags))
    db.executemany("INSERT INTO term_postings VALUES (?, ?, ?, ?)",
                   [(t, segment, np.asarray(s, np.int64).tobytes(), np.asarray(f, np.uint16).tobytes())
                    for t, (s, f) in postings.items()])
    merge_due(db)


def delete_chunks(db, seq_query: str, args: tuple) -> None:
    """Forget the chunks that ``seq_query`` selects (their postings die, to be merged away)."""
    db.execute(f"DELETE FROM chunk_bags WHERE seq IN ({seq_query})", args)


def _new_segment(db, chunks: int) -> int:
    row = db.execute("SELECT COALESCE(MAX(segment), 0) + 1 FROM term_segments").fetchone()
    db.execute("INSERT INTO term_segments VALUES (?, ?)", (row[0], chunks))
    return row[0]


def size_class(chunks: int) -> int:
    """A segment's size class: ``floor(log_FANOUT(chunks))``."""
    return int(math.log(max(chunks, 1), FANOUT))


def merge_due(db) -> None:
    """Merge segments while a size class holds ``FANOUT`` of them, or all of them when half their chunks are dead."""
    while True:
        segments = db.execute("SELECT segment, chunks FROM term_segments ORDER BY segment").fetchall()
        if len(segments) < 2:
            return
        alive = db.execute("SELECT COUNT(*) FROM chunk_bags").fetchone()[0]
        if sum(c for _, c in segments) > 2 * alive + 1000:
            merge(db, [s for s, _ in segments])
            return
        by_class: dict[int, list[int]] = defaultdict(list)
        for s, c in segments:
            by_class[size_class(c)].append(s)
        full = [group for _, group in sorted(by_class.items()) if len(group) >= FANOUT]
        if not full:
            return
        merge(db, full[0])


def merge(db, segments: list[int]) -> None:
    """Rewrite ``segments`` as one, without the postings of chunks no longer stored."""
    alive = np.fromiter((r[0] for r in db.execute("SELECT seq FROM chunk_bags ORDER BY seq")), dtype=np.int64)
    held = np.zeros(len(alive), dtype=bool)
    arg = (json.dumps(segments),)
    rows = db.execute(f"SELECT term, seqs, tfs FROM term_postings WHERE segment IN {SQL_IN} ORDER BY term", arg)
    merged = []
    for term, group in itertools.groupby(rows, key=lambda r: r[0]):
        seqs, tfs = _concat(list(group))
        pos, ok = locate(alive, seqs)
        if not ok.any():
            continue
        seqs, tfs, pos = seqs[ok], tfs[ok], pos[ok]
        held[pos] = True
        order = np.argsort(seqs, kind="stable")
        merged.append((term, seqs[order].tobytes(), tfs[order].tobytes()))
    db.execute(f"DELETE FROM term_postings WHERE segment IN {SQL_IN}", arg)
    db.execute(f"DELETE FROM term_segments WHERE segment IN {SQL_IN}", arg)
    segment = _new_segment(db, int(held.sum()))
    db.executemany("INSERT INTO term_postings VALUES (?, ?, ?, ?)", [(t, segment, s, f) for t, s, f in merged])


def _concat(rows: list) -> tuple[np.ndarray, np.ndarray]:
    """(seqs, tfs) of one term's posting rows, concatenated."""
    if len(rows) == 1:
        return np.frombuffer(rows[0][1], dtype=np.int64), np.frombuffer(rows[0][2], dtype=np.uint16)
    return (np.concatenate([np.frombuffer(r[1], dtype=np.int64) for r in rows]),
            np.concatenate([np.frombuffer(r[2], dtype=np.uint16) for r in rows]))


def locate(sorted_seqs: np.ndarray, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``sorted_seqs``, found) of each of ``seqs``."""
    if not len(sorted_seqs):
        return np.zeros(len(seqs), dtype=np.int64), np.zeros(len(seqs), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_seqs, seqs), len(sorted_seqs) - 1)
    return pos, sorted_seqs[pos] == seqs


def length_norm(lengths: np.ndarray, average: float) -> np.ndarray:
    """BM25's per-chunk ``k1 * (1 - b + b * length / average length)``."""
    return (K1 * (1 - B + B * lengths / (average or 1.0))).astype(np.float32)


def bm25_scores(db, query_terms: list[str], seqs: np.ndarray, norm: np.ndarray,
                alive: np.ndarray | None = None) -> np.ndarray:
    """BM25 of every chunk (``seqs`` ascending, ``norm`` from ``length_norm``; ``alive``: which of them count, None:
    all) for the query terms; 0: no match."""
    scores = np.zeros(len(seqs), dtype=np.float32)
    wanted = Counter(query_terms)
    if not len(seqs) or not wanted:
        return scores
    rows = db.execute(f"SELECT term, seqs, tfs FROM term_postings WHERE term IN {SQL_IN} ORDER BY term, segment",
                      (json.dumps(sorted(wanted)),))
    n = len(seqs) if alive is None else int(np.count_nonzero(alive))
    for term, group in itertools.groupby(rows, key=lambda r: r[0]):
        found, tfs = _concat(list(group))
        pos, ok = locate(seqs, found)
        if alive is not None:
            ok &= alive[pos]
        pos, tf = pos[ok], tfs[ok].astype(np.float32)
        df = len(pos)
        if not df:
            continue
        idf = max(math.log((n - df + 0.5) / (df + 0.5)), 1e-6)
        scores[pos] += wanted[term] * idf * tf * (K1 + 1) / (tf + norm[pos])
    return scores
