"""Real English text at scale, embedded with the real model: the ``realtext`` benchmark dataset.

No synthetic generator is the truth about how real embeddings spread. This dataset is built
from corpora that Debian packages install (never copied into the repository):

- base (the "ads"): WordNet 3.0 synset glosses (``wordnet-base``: /usr/share/wordnet/data.*)
  and GNU Collaborative International Dictionary of English definitions (``dict-gcide``:
  /usr/share/dictd/gcide.dict.dz), one text per sense, exact duplicates removed;
- queries (the "users"): WordNet's usage examples (the quoted sentences of its glosses), a
  disjoint set of real sentences that are not in the base.

Texts are embedded once with all-MiniLM-L6-v2 and cached outside the repository
(``~/.cache/adindex/realtext/``, in resumable chunks), so a benchmark run only reads them.
``python -m benchmarks.realtext`` builds the cache (about an hour of embedding on 2 cores;
run it in the background, e.g. ``nice -n 19``). Without the packages the dataset is skipped
with a message saying which ``apt-get install`` is missing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from benchmarks.datasets import Dataset

logger = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")
CACHE_DIR = Path.home() / ".cache" / "adindex" / "realtext"
PACKAGES = "wordnet-base dict-gcide"
CHUNK = 8192  # texts embedded and saved per cache file (a crash loses at most one chunk)
MIN_CHARS, MAX_CHARS = 20, 400

_QUOTED = re.compile(r'"([^"]{12,300})"')
_SENSE = re.compile(r"^\s{1,6}(\d+)\.\s+(.*)")
_TAG = re.compile(r"\[[^\]]*\]|\{|\}|<[^>]*>")
_SPACES = re.compile(r"\s+")
_NOISE = re.compile(r"[\^`=+\]\\]")  # etymology and pronunciation markup, not prose


def missing() -> str | None:
    """Why the dataset cannot be built here (None when it can)."""
    if not (WORDNET_DIR / "data.noun").is_file() or not GCIDE_FILE.is_file():
        return f"realtext needs the Debian packages {PACKAGES}: apt-get install {PACKAGES}"
    return None


def wordnet_glosses_and_examples() -> tuple[list[str], list[str]]:
    """(definitions, usage examples) of every WordNet synset, in file order."""
    definitions: list[str] = []
    examples: list[str] = []
    for part in ("noun", "verb", "adj", "adv"):
        with (WORDNET_DIR / f"data.{part}").open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # the licence header
                gloss = line.split("|", 1)[1].strip()
                examples += [m.strip() for m in _QUOTED.findall(gloss)]
                definition = _QUOTED.sub("", gloss).strip(" ;")
                definitions.append(definition)
    return definitions, examples


def _gcide_senses(entry: str) -> Iterator[str]:
    """Definitions of one dictionary entry: its numbered senses, or its first paragraph."""
    lines = [ln for ln in entry.splitlines() if "--" not in ln]  # drop quotation sources
    paragraphs: list[list[str]] = [[]]
    for line in lines[1:]:  # the first line is the headword and its pronunciation
        sense = _SENSE.match(line)
        if sense or not line.strip():
            paragraphs.append([sense.group(2)] if sense else [])
        else:
            paragraphs[-1].append(line.strip())
    for paragraph in paragraphs:
        text = _SPACES.sub(" ", _TAG.sub("", " ".join(paragraph))).strip(" ;.")
        if (
            text
            and text[0].isalpha()
            and not text.startswith(("See", "Syn"))
            and not _NOISE.search(text)
        ):
            yield text


def gcide_definitions() -> list[str]:
    """Definitions of GCIDE's entries (dictd format: entries begin at headword lines)."""
    text = gzip.decompress(GCIDE_FILE.read_bytes()).decode("utf-8", errors="replace")
    out: list[str] = []
    for entry in re.split(r"\n(?=\S)", text):
        out.extend(_gcide_senses(entry))
    return out


def texts() -> tuple[list[str], list[str]]:
    """(base texts, query texts): deduplicated, of a sentence's length, queries disjoint."""
    glosses, examples = wordnet_glosses_and_examples()
    seen: set[str] = set()
    base: list[str] = []
    for t in [*glosses, *gcide_definitions()]:
        if MIN_CHARS <= len(t) <= MAX_CHARS and t.lower() not in seen:
            seen.add(t.lower())
            base.append(t)
    queries = []
    for t in examples:
        if MIN_CHARS <= len(t) <= MAX_CHARS and t.lower() not in seen:
            seen.add(t.lower())
            queries.append(t)
    return base, queries


def _digest(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in items:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def embed_cached(name: str, items: Sequence[str], cache: Path, batch_size: int = 64) -> np.ndarray:
    """Embeddings of ``items`` (n, 384) float32 unit rows, computed once per CHUNK and cached.

    The cache directory is named by the texts' digest: other texts never reuse it.
    """
    folder = cache / f"{name}-{len(items)}-{_digest(items)}"
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    embedder = None
    for start in range(0, len(items), CHUNK):
        path = folder / f"{start:08d}.npy"
        if not path.is_file():
            if embedder is None:
                from indexer.embedding import SentenceTransformerEmbedder

                embedder = SentenceTransformerEmbedder(batch_size=batch_size)
            logger.info("Embedding %s %d-%d of %d", name, start, start + CHUNK, len(items))
            x = embedder.encode(items[start : start + CHUNK], progress=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, x)
            tmp.rename(path)  # a part is there whole or not at all
        parts.append(np.load(path))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def load_realtext(nb: int | None = None, nq: int = 10_000, cache: Path = CACHE_DIR) -> Dataset:
    """The realtext dataset (metric "ip"): the first ``nb`` base texts (all when None) and a
    seeded sample of ``nq`` queries.

    Raises:
        FileNotFoundError: the Debian packages are not installed (the message says which).
    """
    reason = missing()
    if reason is not None:
        raise FileNotFoundError(reason)
    base, queries = texts()
    rng = np.random.default_rng(1338)
    picked = np.sort(rng.choice(len(queries), min(nq, len(queries)), replace=False))
    base = base[:nb] if nb else base
    xb = embed_cached("base", base, cache)
    xq = embed_cached("queries", [queries[i] for i in picked], cache)
    description = (
        f"{len(xb)} WordNet glosses and GCIDE definitions (base) and {len(xq)} WordNet usage "
        "examples (queries), embedded with all-MiniLM-L6-v2"
    )
    return Dataset(f"realtext-{len(xb)}", xb, xq, "ip", description)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nq", type=int, default=10_000, help="queries (default: %(default)s)")
    p.add_argument("--count", action="store_true", help="only count the texts; embed nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    reason = missing()
    if reason is not None:
        print(f"skipped: {reason}", file=sys.stderr)
        return 0
    base, queries = texts()
    print(f"{len(base)} base texts, {len(queries)} query texts")
    for t in (*base[:3], *base[-3:], *queries[:3]):
        print("  ", t[:120])
    if not args.count:
        ds = load_realtext(None, args.nq)
        print(f"{ds.name}: xb {ds.xb.shape}, xq {ds.xq.shape} cached in {CACHE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
