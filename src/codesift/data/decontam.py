"""Decontamination: drop training pairs that match an evaluation query or document.

Two tests, both on normalised text (lower case, whitespace collapsed): an exact match (hash), and
a near duplicate, a Jaccard similarity of token 3-gram shingles at or above ``threshold``, found
with MinHash LSH (datasketch) and confirmed on the exact shingle sets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codesift.data.jsonl import read_jsonl
from codesift.data.mining import normalize, text_hash

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class DecontamConfig:
    """Near-duplicate settings."""

    threshold: float = 0.7  # Jaccard of shingle sets
    shingle: int = 3  # tokens per shingle
    num_perm: int = 64
    min_shingles: int = 4  # shorter texts are only compared exactly


def _fast_hash():
    """A 32-bit hash of bytes for MinHash: xxhash when installed, else datasketch's SHA-1."""
    try:
        import xxhash

        return xxhash.xxh32_intdigest
    except ImportError:
        from datasketch.hashfunc import sha1_hash32

        return sha1_hash32


def shingles(text: str, k: int = 3) -> set[bytes]:
    """The set of k-token shingles of the normalised text."""
    tokens = _WORD.findall(normalize(text))
    if len(tokens) < k:
        return {" ".join(tokens).encode()} if tokens else set()
    return {" ".join(tokens[i:i + k]).encode("utf-8", errors="surrogatepass") for i in range(len(tokens) - k + 1)}


def read_beir_texts(folder: str | Path) -> Iterator[tuple[str, str]]:
    """``(id, text)`` of every query and corpus document of a BEIR folder."""
    folder = Path(folder)
    files = [folder / "queries.jsonl", folder / "corpus.jsonl"]
    if not any(f.is_file() for f in files):
        raise FileNotFoundError(f"{folder} has no queries.jsonl or corpus.jsonl; --exclude takes BEIR task folders")
    for file in files:
        if not file.is_file():
            continue
        for _, row in read_jsonl(file):
            text = " ".join(x for x in (row.get("title") or "", row.get("text") or "") if x)
            if text.strip():
                yield f"{folder.name}/{file.stem}/{row.get('_id', '')}", text


class Decontaminator:
    """An index of evaluation texts that answers: does this text match one of them?"""

    def __init__(self, texts: Iterable[tuple[str, str]], cfg: DecontamConfig | None = None) -> None:
        from datasketch import MinHash, MinHashLSH

        self.cfg = cfg or DecontamConfig()
        self._MinHash = MinHash
        # one set of permutations for all (MinHash draws them anew per object otherwise: slow)
        template = MinHash(num_perm=self.cfg.num_perm, seed=1)
        self._permutations, self._scheme = template.permutations, template.scheme
        self._hashfunc = _fast_hash()
        self.exact: dict[str, str] = {}
        self._seen: dict[str, str | None] = {}  # answers by text hash: mined negatives repeat across pairs
        self.shingle_sets: dict[str, set[bytes]] = {}
        self.lsh = MinHashLSH(threshold=self.cfg.threshold, num_perm=self.cfg.num_perm)
        for key, text in texts:
            self.exact.setdefault(text_hash(text), key)
            sh = shingles(text, self.cfg.shingle)
            if len(sh) >= self.cfg.min_shingles and key not in self.shingle_sets:
                self.shingle_sets[key] = sh
                self.lsh.insert(key, self._minhash(sh))

    @classmethod
    def from_beir(cls, folders: Iterable[str | Path], cfg: DecontamConfig | None = None) -> Decontaminator:
        """Index every query and document of the given BEIR folders."""
        texts = [kv for folder in folders for kv in read_beir_texts(folder)]
        return cls(texts, cfg)

    def __len__(self) -> int:
        return len(self.exact)

    def _minhash(self, sh: set[bytes]) -> object:
        mh = self._MinHash(
            num_perm=self.cfg.num_perm, seed=1, hashfunc=self._hashfunc, permutations=self._permutations, scheme=self._scheme
        )
        mh.update_batch(list(sh))
        return mh

    def match(self, text: str) -> str | None:
        """The id of an evaluation text that ``text`` duplicates (exactly or nearly), else None."""
        digest = text_hash(text)
        if digest not in self._seen:
            self._seen[digest] = self.exact.get(digest) or self._near_match(text)
        return self._seen[digest]

    def _near_match(self, text: str) -> str | None:
        sh = shingles(text, self.cfg.shingle)
        if len(sh) < self.cfg.min_shingles or not self.shingle_sets:
            return None
        for key in self.lsh.query(self._minhash(sh)):
            other = self.shingle_sets[key]
            if len(sh & other) / len(sh | other) >= self.cfg.threshold:
                return key
        return None

    def contaminated(self, query: str, document: str) -> str | None:
        """The matching evaluation id if the query, the document, or both together duplicate one."""
        return self.match(query) or self.match(document) or self.match(query + "\n" + document)


def jaccard(a: str, b: str, k: int = 3) -> float:
    """Jaccard similarity of the shingle sets of two texts (for tests and reports)."""
    sa, sb = shingles(a, k), shingles(b, k)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)

