"""Task data: the probing tasks of the book, read from the real data sets.

Every loader returns one :class:`TaskData` per split (``train``, ``dev``, ``test``).
A ``TaskData`` holds the split's sentences as word lists, the probed items (a word,
a (head, dependent) word pair, or the whole sentence) and their labels.

| task | data | item | labels |
|---|---|---|---|
| ``pos`` | UD English PUD | a word | UPOS |
| ``dep`` | UD English PUD | (head, dependent) | relation, subtype after ``:`` dropped |
| ``ps-role`` | STREUSLE 4.7.1 | single-token adposition/possessive | scene role (SS) |
| ``ps-fxn`` | STREUSLE 4.7.1 | same tokens | function (SS2) |
| ``trec-50`` | TREC (Li & Roth 2002) | the question | 50 fine classes |
| ``sst-2``, ``mrpc`` | GLUE | the sentence / the pair | 2 |

Data directory: ``FTGEO_DATA`` if set, else ``./data/``, else ``../shared/data/``
(both also tried relative to the source checkout). A missing file is downloaded from
its public source into ``./data/`` and checked against its sha256; offline, the loader
stops with a message that names the file and ``FTGEO_DATA``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._util import (
    StorageError,
    atomic_write_bytes,
    canonical_json,
    repo_root,
    sha256_file,
    sha256_text,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


# --------------------------------------------------------------------------------------
# Files, checksums and the data directory
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataFile:
    """A file of a data set: where it sits under the data directory and how to get it."""

    dataset: str
    name: str
    sha256: str
    url: str | None = None
    member: str | None = None  # path inside the zip archive at ``url``, if any
    how: str = ""  # what to do when no url can serve it


_UD = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-PUD/r2.18/"
_STREUSLE = "https://raw.githubusercontent.com/nert-nlp/streusle/v4.7.1/"
_TREC = "https://cogcomp.seas.upenn.edu/Data/QA/QC/"
_GLUE_SST2 = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"

FILES: dict[str, DataFile] = {f.dataset + "/" + f.name: f for f in [
    DataFile("ud-english-pud", "en_pud-ud-test.conllu",
             "c80584f2bc2b31d5bada78a1136f9feec7ac49e5e18898db02dea434b5b8f0aa",
             _UD + "en_pud-ud-test.conllu"),
    DataFile("streusle", "train/streusle.ud_train.conllulex",
             "adf7244b95c600a1d1e72fa4eb61009bdce3ba41722581e57283e0f6727cd229",
             _STREUSLE + "train/streusle.ud_train.conllulex"),
    DataFile("streusle", "dev/streusle.ud_dev.conllulex",
             "ef5e72648b9c3673abeb15c4641a68f849e1d652bad3a6b15cca73124b1e5d46",
             _STREUSLE + "dev/streusle.ud_dev.conllulex"),
    DataFile("streusle", "test/streusle.ud_test.conllulex",
             "7d159c49a015214944eab3acbfe7b0aefaa112e0928500a3dada7a4cc1048a18",
             _STREUSLE + "test/streusle.ud_test.conllulex"),
    DataFile("trec", "train_5500.label",
             "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3",
             _TREC + "train_5500.label"),
    DataFile("trec", "TREC_10.label",
             "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e",
             _TREC + "TREC_10.label"),
    DataFile("sst2", "train.tsv",
             "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
             _GLUE_SST2, member="SST-2/train.tsv"),
    DataFile("sst2", "dev.tsv",
             "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
             _GLUE_SST2, member="SST-2/dev.tsv"),
    DataFile("mrpc", "train.tsv",
             "122becc469405bc16f9defcb8715d2a4b7ce600e9d9381e6dc42bfdd1494c51d",
             how="GLUE's MRPC train.tsv is built by GLUE's download script from Microsoft's "
                 "msr_paraphrase_train.txt; build it there and copy it to"),
    DataFile("mrpc", "dev.tsv",
             "81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7",
             how="GLUE's MRPC dev.tsv is built by GLUE's download script from Microsoft's "
                 "msr_paraphrase_train.txt; build it there and copy it to"),
]}


class DataNotFoundError(FileNotFoundError):
    """A data file is neither in the data directory nor downloadable."""


def data_dirs() -> list[Path]:
    """The data directories searched, in order (see the module docstring)."""
    env = os.environ.get("FTGEO_DATA")
    if env:
        return [Path(env).expanduser()]
    dirs = [Path.cwd() / "data", Path.cwd().parent / "shared" / "data"]
    root = repo_root()
    if root is not None:
        dirs[1:1] = [root / "data"]
        dirs.append(root.parent / "shared" / "data")
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(d)
    return out


@lru_cache(maxsize=64)
def _verified(path: str, size: int, mtime_ns: int, sha256: str) -> bool:
    return sha256_file(path) == sha256


def data_file(dataset: str, name: str, *, verify: bool = True, download: bool = True) -> Path:
    """Path of a known data file, checked against its sha256; downloaded if absent.

    Raises :class:`DataNotFoundError` naming the file and ``FTGEO_DATA`` when the file
    is missing and cannot be downloaded, and ``ValueError`` when a file is present but
    differs from the expected version.
    """
    spec = FILES[f"{dataset}/{name}"]
    dirs = data_dirs()
    for d in dirs:
        path = d / dataset / name
        if path.is_file():
            if verify:
                st = path.stat()
                if not _verified(str(path), st.st_size, st.st_mtime_ns, spec.sha256):
                    raise ValueError(
                        f"{path} is not the expected version of {dataset}/{name} (its sha256 "
                        f"differs from {spec.sha256[:16]}...). Replace it with the original "
                        f"file, or delete it to download it again.")
            return path
    target = (Path(os.environ["FTGEO_DATA"]).expanduser() if os.environ.get("FTGEO_DATA")
              else (repo_root() or Path.cwd()) / "data") / dataset / name
    searched = ", ".join(str(d / dataset / name) for d in dirs)
    if spec.url is None or not download:
        how = f"{spec.how} {target}" if spec.how else f"Put it at {target}"
        raise DataNotFoundError(
            f"data file {dataset}/{name} not found (looked in: {searched}). {how}, "
            f"or set FTGEO_DATA to a folder that holds {dataset}/{name}.")
    try:
        _download(spec, target)
    except StorageError:
        raise  # downloaded, but the data folder cannot take it: that message says what to do
    except (urllib.error.URLError, OSError, TimeoutError, zipfile.BadZipFile) as err:
        raise DataNotFoundError(
            f"data file {dataset}/{name} not found (looked in: {searched}) and the download "
            f"from {spec.url} failed ({err}). Without internet: copy the file to {target}, "
            f"or set FTGEO_DATA to a folder that holds {dataset}/{name}.") from err
    return target


def _download(spec: DataFile, target: Path) -> None:
    log.info("downloading %s/%s from %s", spec.dataset, spec.name, spec.url)
    with urllib.request.urlopen(spec.url, timeout=60) as response:
        payload = response.read()
    if spec.member:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            payload = zf.read(spec.member)
    got = hashlib.sha256(payload).hexdigest()
    if got != spec.sha256:
        raise OSError(f"downloaded {spec.name} has sha256 {got[:16]}..., "
                      f"expected {spec.sha256[:16]}...")
    atomic_write_bytes(target, payload, setting="FTGEO_DATA")


# --------------------------------------------------------------------------------------
# TaskData
# --------------------------------------------------------------------------------------

ITEM_KINDS = ("word", "pair", "sentence")


@dataclass(frozen=True, eq=False)
class TaskData:
    """One split of a task.

    Attributes
    ----------
    task, split : str
    sentences : tuple of tuple of str, one word list per sentence of the split
    second : tuple of tuple of str or None; the second sentence of each pair (MRPC)
    items : ndarray of shape (n_items, k), int64
        ``k = 2`` for a word (sentence, word), ``3`` for a pair (sentence, head, dependent),
        ``1`` for a sentence (sentence); word indices count from 0 over integer-ID words.
    y : ndarray of shape (n_items,), int64, indices into ``labels``
    labels : tuple of str, the task's label vocabulary (shared by all splits)
    item_kind : "word", "pair" or "sentence"
    source : the files the split was read from
    """

    task: str
    split: str
    sentences: tuple[tuple[str, ...], ...]
    items: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    item_kind: str
    second: tuple[tuple[str, ...], ...] | None = None
    source: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        width = {"word": 2, "pair": 3, "sentence": 1}[self.item_kind]
        if self.items.shape != (len(self.y), width):
            raise ValueError(f"{self.task}/{self.split}: items must have shape "
                             f"({len(self.y)}, {width}), got {self.items.shape}")

    @property
    def n_items(self) -> int:
        return len(self.y)

    @property
    def n_words(self) -> int:
        return sum(len(s) for s in self.sentences)

    @property
    def y_names(self) -> np.ndarray:
        """The string label of every item."""
        return np.asarray(self.labels, dtype=object)[self.y]

    def label_counts(self) -> dict[str, int]:
        """How many items carry each label (labels absent from the split count 0)."""
        counts = np.bincount(self.y, minlength=len(self.labels))
        return dict(zip(self.labels, counts.tolist(), strict=True))

    @property
    def checksum(self) -> str:
        """sha256 of the sentences and items: part of every cache key built from this split."""
        return sha256_text(canonical_json({
            "sentences": self.sentences, "second": self.second,
            "items": self.items.tolist(), "y": self.y.tolist(), "labels": self.labels,
        }))

    def head(self, n_sentences: int) -> TaskData:
        """The first ``n_sentences`` sentences of the split and their items (for smoke runs)."""
        if n_sentences <= 0 or n_sentences >= len(self.sentences):
            return self
        keep = self.items[:, 0] < n_sentences
        return TaskData(self.task, self.split, self.sentences[:n_sentences], self.items[keep],
                        self.y[keep], self.labels, self.item_kind,
                        None if self.second is None else self.second[:n_sentences], self.source)

    def sample_index(self, max_items: int | None, seed: int = 0) -> np.ndarray:
        """The item rows of :meth:`sample` (sorted), to subset arrays aligned with ``items``."""
        if max_items is None or max_items >= self.n_items:
            return np.arange(self.n_items)
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {max_items}")
        per_sentence = np.bincount(self.items[:, 0], minlength=len(self.sentences))
        keep, total = [], 0
        for s in np.random.default_rng(seed).permutation(np.flatnonzero(per_sentence)):
            if total + per_sentence[s] <= max_items:
                keep.append(int(s))
                total += int(per_sentence[s])
        return np.flatnonzero(np.isin(self.items[:, 0], keep))

    def sample(self, max_items: int | None, seed: int = 0) -> TaskData:
        """A seeded subset of whole sentences holding at most ``max_items`` items.

        Sentences are taken in a seeded random order while their items fit; the kept
        sentences stay in their original order and are renumbered. The same arguments give
        the same subset, so a sample is a stable probing set (e.g. along a trajectory).
        ``None``, or a ``max_items`` of at least ``n_items``, returns the split itself.
        :meth:`sample_index` gives the kept item rows.

        >>> d = TaskData("t", "train", (("a", "b"), ("c",), ("d", "e", "f")),
        ...              np.array([[0, 0], [0, 1], [1, 0], [2, 0], [2, 1], [2, 2]]),
        ...              np.zeros(6, dtype=int), ("x",), "word")
        >>> s = d.sample(3)
        >>> s.n_items <= 3, d.sample(3).checksum == s.checksum, d.sample(None) is d
        (True, True, True)
        >>> [d.sentences[i] for i in np.unique(d.items[d.sample_index(3), 0])] == list(s.sentences)
        True
        """
        if max_items is None or max_items >= self.n_items:
            return self
        rows = self.sample_index(max_items, seed)
        keep = np.unique(self.items[rows, 0])
        new_index = np.full(len(self.sentences), -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        items = self.items[rows].copy()
        items[:, 0] = new_index[items[:, 0]]
        second = None if self.second is None else tuple(self.second[s] for s in keep)
        return TaskData(self.task, f"{self.split}[sample {max_items}]",
                        tuple(self.sentences[s] for s in keep), items, self.y[rows],
                        self.labels, self.item_kind, second, self.source)


# --------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConllSentence:
    """A sentence of a CoNLL-U(-Lex) file: the integer-ID token rows only."""

    sent_id: str
    rows: tuple[tuple[str, ...], ...]
    line: int  # line number of the sentence's first token (1-based), for messages

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(r[1] for r in self.rows)


def read_conllu(path: str | os.PathLike, *, n_columns: int = 10) -> list[ConllSentence]:
    """Read a CoNLL-U file (or CoNLL-U-Lex with ``n_columns=19``).

    Multiword-token lines (``2-3``) and empty nodes (``4.1``) are skipped, comments are
    read defensively (only ``# sent_id = ...`` is used). A malformed line raises
    ``ValueError`` naming the file and line number.
    """
    path = Path(path)
    sentences: list[ConllSentence] = []
    rows: list[tuple[str, ...]] = []
    sent_id, first_line = "", 0

    def close(lineno: int) -> None:
        nonlocal rows, sent_id, first_line
        if rows:
            _check_ids(path, rows, first_line)
            sentences.append(ConllSentence(sent_id or f"{path.name}:{first_line}",
                                           tuple(rows), first_line))
        rows, sent_id, first_line = [], "", 0

    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                close(lineno)
                continue
            if line.startswith("#"):
                key, sep, value = line[1:].partition("=")
                if sep and key.strip() == "sent_id":
                    sent_id = value.strip()
                continue
            cols = line.split("\t")
            if len(cols) != n_columns:
                raise ValueError(f"{path}:{lineno}: expected {n_columns} tab-separated columns, "
                                 f"found {len(cols)}: {line[:80]!r}. Is this a "
                                 f"{'CoNLL-U-Lex' if n_columns == 19 else 'CoNLL-U'} file?")
            tok_id = cols[0]
            if "-" in tok_id or "." in tok_id:  # multiword token or empty node
                continue
            if not tok_id.isdigit():
                raise ValueError(f"{path}:{lineno}: token ID {tok_id!r} is not an integer, "
                                 "a range (2-3) or an empty node (4.1)")
            if cols[6] != "_" and not cols[6].isdigit():
                raise ValueError(f"{path}:{lineno}: HEAD {cols[6]!r} is not an integer")
            if not rows:
                first_line = lineno
            rows.append(tuple(cols))
        close(lineno + 1 if sentences or rows else 0)
    if not sentences:
        raise ValueError(f"{path}: no sentences found; is it a CoNLL-U file?")
    return sentences


def _check_ids(path: Path, rows: list[tuple[str, ...]], first_line: int) -> None:
    ids = [int(r[0]) for r in rows]
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"{path}:{first_line}: token IDs of the sentence starting here are "
                         f"not 1..{len(ids)} in order")
    for k, r in enumerate(rows):
        if r[6].isdigit() and int(r[6]) > len(rows):
            raise ValueError(f"{path}:{first_line + k}: HEAD {r[6]} points past the sentence "
                             f"({len(rows)} words)")


def _read_lines(path: Path, *, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Lines of a text file as (1-based number, text); undecodable bytes become spaces."""
    data = path.read_bytes().decode(encoding, errors="replace").replace("\ufffd", " ")
    yield from enumerate(data.splitlines(), start=1)


def _read_tsv(path: Path, n_fields: int, *, encoding: str = "utf-8") -> list[tuple[int, list[str]]]:
    """Rows of a TSV with a header, quoting disabled (MRPC has stray quotes), with line numbers."""
    out = []
    with open(path, encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for k, row in enumerate(reader):
            if k == 0:
                continue  # header
            if len(row) != n_fields:
                raise ValueError(f"{path}:{k + 1}: expected {n_fields} tab-separated fields, "
                                 f"found {len(row)}")
            out.append((k + 1, row))
    return out


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------

TASKS = ("pos", "dep", "ps-role", "ps-fxn", "trec-50", "sst-2", "mrpc")
PROBING_TASKS = TASKS[:5]


def task_name(name: str) -> str:
    """The canonical name of a task; accepts any case and ``-``/``_`` spelling.

    >>> task_name("TREC_50"), task_name("psrole")
    ('trec-50', 'ps-role')
    """
    norm = str(name).lower().replace("-", "").replace("_", "")
    for t in TASKS:
        if t.replace("-", "") == norm:
            return t
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")


def load_task(name: str, *, seed: int = 0, conllu: str | os.PathLike | Mapping[str, str] | None = None,
              dev_fraction: float = 0.1, test_fraction: float = 0.2) -> dict[str, TaskData]:
    """Load a task: ``{"train": TaskData, "dev": TaskData, "test": TaskData}``.

    Parameters
    ----------
    name : a task of :data:`TASKS` (any case, ``-`` or ``_``)
    seed : seed of the split where the data set has none of its own (UD by sentence;
        the dev part carved from train for TREC, SST-2 and MRPC)
    conllu : for ``pos`` and ``dep``: another UD treebank, either one ``.conllu`` file
        (split by sentence like PUD) or a mapping ``{"train": path, "dev": path, "test": path}``
    dev_fraction, test_fraction : shares of a data set without official splits
    """
    task = task_name(name)
    if not 0 < dev_fraction < 1 or not 0 <= test_fraction < 1 or dev_fraction + test_fraction >= 1:
        raise ValueError(f"dev_fraction={dev_fraction} and test_fraction={test_fraction} must be "
                         "in (0, 1) with a sum below 1")
    if conllu is not None and task not in ("pos", "dep"):
        raise ValueError(f"conllu= applies to the UD tasks pos and dep, not {task!r}")
    if task in ("pos", "dep"):
        return _load_ud(task, conllu, seed, dev_fraction, test_fraction)
    if task in ("ps-role", "ps-fxn"):
        return _load_streusle(task)
    if task == "trec-50":
        return _load_trec(seed, dev_fraction)
    return _load_glue(task, seed, dev_fraction)


def _carve(n: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded random boolean mask selecting round(n * fraction) of n positions."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(n * fraction))]] = True
    return mask


def _vocabulary(per_split: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Sorted union of the labels of all splits."""
    return tuple(sorted({lab for labels in per_split.values() for lab in labels}))


def _assemble(task: str, kind: str, parts: Mapping[str, tuple], source: tuple[str, ...]
              ) -> dict[str, TaskData]:
    """Build TaskData from per-split (sentences, items, label strings[, second])."""
    labels = _vocabulary({s: p[2] for s, p in parts.items()})
    index = {lab: i for i, lab in enumerate(labels)}
    width = {"word": 2, "pair": 3, "sentence": 1}[kind]
    out = {}
    for split, p in parts.items():
        sentences, items, names = p[0], p[1], p[2]
        second = p[3] if len(p) > 3 else None
        out[split] = TaskData(task, split, tuple(sentences),
                              np.asarray(items, dtype=np.int64).reshape(-1, width),
                              np.asarray([index[n] for n in names], dtype=np.int64),
                              labels, kind, None if second is None else tuple(second), source)
    return out


def _ud_items(task: str, sentences: Sequence[ConllSentence]) -> tuple[list, list, list]:
    words, items, names = [], [], []
    for s_idx, sent in enumerate(sentences):
        words.append(sent.words)
        for w_idx, row in enumerate(sent.rows):
            if task == "pos":
                items.append((s_idx, w_idx))
                names.append(row[3])
            elif row[6] not in ("0", "_"):  # the root has no head word
                items.append((s_idx, int(row[6]) - 1, w_idx))
                names.append(row[7].split(":")[0])
    return words, items, names


def _load_ud(task, conllu, seed, dev_fraction, test_fraction) -> dict[str, TaskData]:
    if conllu is None:
        path = data_file("ud-english-pud", "en_pud-ud-test.conllu")
        by_split = _split_sentences(read_conllu(path), seed, dev_fraction, test_fraction)
        source = (str(path),)
    elif isinstance(conllu, Mapping):
        missing = set(SPLITS) - set(conllu)
        if missing:
            raise ValueError(f"conllu mapping needs the splits {SPLITS}; missing {sorted(missing)}")
        by_split = {s: read_conllu(_existing(conllu[s], "conllu")) for s in SPLITS}
        source = tuple(str(conllu[s]) for s in SPLITS)
    else:
        path = _existing(conllu, "conllu")
        by_split = _split_sentences(read_conllu(path), seed, dev_fraction, test_fraction)
        source = (str(path),)
    parts = {s: _ud_items(task, sents) for s, sents in by_split.items()}
    return _assemble(task, "word" if task == "pos" else "pair", parts, source)


def _existing(path: str | os.PathLike, parameter: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{parameter}={str(path)!r}: no such file")
    return p


def _split_sentences(sentences: list[ConllSentence], seed: int, dev_fraction: float,
                     test_fraction: float) -> dict[str, list[ConllSentence]]:
    """Seeded split by sentence: test first, then dev carved from the rest; order kept."""
    n = len(sentences)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    n_dev = int(round((n - n_test) * dev_fraction))
    assign = np.empty(n, dtype=object)
    assign[order[:n_test]] = "test"
    assign[order[n_test:n_test + n_dev]] = "dev"
    assign[order[n_test + n_dev:]] = "train"
    return {s: [sent for sent, a in zip(sentences, assign, strict=True) if a == s] for s in SPLITS}


STREUSLE_FILES = {"train": "train/streusle.ud_train.conllulex",
                  "dev": "dev/streusle.ud_dev.conllulex",
                  "test": "test/streusle.ud_test.conllulex"}


def _load_streusle(task: str) -> dict[str, TaskData]:
    """Single-token adpositions and possessives whose role (SS) / function (SS2) is ``p.*``.

    Columns (0-based): 10 SMWE, 11 LEXCAT, 13 SS, 14 SS2 (CONLLULEX.md). Single-token means
    a strong expression of one token: SMWE ``_`` and LEXCAT not ``_``.
    """
    column = 13 if task == "ps-role" else 14
    parts, source = {}, []
    for split, name in STREUSLE_FILES.items():
        path = data_file("streusle", name)
        source.append(str(path))
        words, items, names = [], [], []
        for s_idx, sent in enumerate(read_conllu(path, n_columns=19)):
            words.append(sent.words)
            for w_idx, row in enumerate(sent.rows):
                if row[10] == "_" and row[11] != "_" and row[column].startswith("p."):
                    items.append((s_idx, w_idx))
                    names.append(row[column])
        parts[split] = (words, items, names)
    return _assemble(task, "word", parts, tuple(source))


def _load_trec(seed: int, dev_fraction: float) -> dict[str, TaskData]:
    """TREC questions with their 50 fine labels ``COARSE:fine``; dev carved from train."""
    rows = {}
    source = []
    for split, name in (("train", "train_5500.label"), ("test", "TREC_10.label")):
        path = data_file("trec", name)
        source.append(str(path))
        out = []
        # train_5500.label holds one byte that is not UTF-8 (0xF0, line 66): read as UTF-8
        # with replacement and turn the replacement into a space, as Hugging Face does.
        for lineno, line in _read_lines(path):
            if not line.strip():
                continue
            label, sep, text = line.partition(" ")
            if not sep or ":" not in label or not text.strip():
                raise ValueError(f"{path}:{lineno}: expected 'COARSE:fine question ...', "
                                 f"got {line[:60]!r}")
            out.append((tuple(text.split()), label))
        rows[split] = out
    dev_mask = _carve(len(rows["train"]), dev_fraction, seed)
    train = [r for r, d in zip(rows["train"], dev_mask, strict=True) if not d]
    dev = [r for r, d in zip(rows["train"], dev_mask, strict=True) if d]
    parts = {s: _sentence_part(r) for s, r in (("train", train), ("dev", dev), ("test", rows["test"]))}
    return _assemble("trec-50", "sentence", parts, tuple(source))


def _sentence_part(rows: list[tuple]) -> tuple:
    sentences = [r[0] for r in rows]
    part = (sentences, [(i,) for i in range(len(rows))], [r[-1] for r in rows])
    if rows and len(rows[0]) == 3:
        part += ([r[1] for r in rows],)
    return part


GLUE_LABELS = {"sst-2": {"0": "negative", "1": "positive"},
               "mrpc": {"0": "not_paraphrase", "1": "paraphrase"}}


def _load_glue(task: str, seed: int, dev_fraction: float) -> dict[str, TaskData]:
    """SST-2 or MRPC; the official dev set is our test set, dev is carved from train."""
    dataset = task.replace("-", "")
    rows, source = {}, []
    for split, name in (("train", "train.tsv"), ("test", "dev.tsv")):
        path = data_file(dataset, name)
        source.append(str(path))
        out = []
        if task == "sst-2":
            for lineno, (text, label) in _read_tsv(path, 2):
                out.append((tuple(text.split()), _glue_label(task, label, path, lineno)))
        else:  # MRPC: a byte-order mark before the header, stray quotes in the text
            for lineno, row in _read_tsv(path, 5, encoding="utf-8-sig"):
                out.append((tuple(row[3].split()), tuple(row[4].split()),
                            _glue_label(task, row[0], path, lineno)))
        rows[split] = out
    dev_mask = _carve(len(rows["train"]), dev_fraction, seed)
    train = [r for r, d in zip(rows["train"], dev_mask, strict=True) if not d]
    dev = [r for r, d in zip(rows["train"], dev_mask, strict=True) if d]
    parts = {s: _sentence_part(r) for s, r in (("train", train), ("dev", dev), ("test", rows["test"]))}
    return _assemble(task, "sentence", parts, tuple(source))


def _glue_label(task: str, value: str, path: Path, lineno: int) -> str:
    try:
        return GLUE_LABELS[task][value.strip()]
    except KeyError:
        raise ValueError(f"{path}:{lineno}: label {value!r} is not one of "
                         f"{sorted(GLUE_LABELS[task])}") from None


def task_table(tasks: Mapping[str, Mapping[str, TaskData]]):
    """A pandas table of sizes: one row per task with items per split and label counts."""
    import pandas as pd

    rows = []
    for name, splits in tasks.items():
        row = {"task": name, "item": splits["train"].item_kind,
               "labels": len(splits["train"].labels)}
        for s in SPLITS:
            row[f"{s} sentences"] = len(splits[s].sentences)
            row[f"{s} items"] = splits[s].n_items
        rows.append(row)
    return pd.DataFrame(rows).set_index("task")
