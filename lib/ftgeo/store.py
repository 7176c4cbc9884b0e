"""The content-addressed artifact cache.

An entry is a folder of ``.npy`` arrays plus ``manifest.json``, found under
``<root>/<kind>/<key>`` where ``key`` is the sha256 of everything that made it
(model fingerprint, task, split, data checksum, pooling, ...). An entry is built in
a private temporary folder and renamed into place in one step, so a run killed
half-way leaves no entry behind; the manifest records each array's sha256, so a
damaged entry is detected on load, removed and rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._util import (
    artifacts_dir,
    atomic_write_json,
    canonical_json,
    remove_left_by_dead_processes,
    sha256_file,
    sha256_text,
    writing_to,
)

log = logging.getLogger(__name__)

#: Six hex digits of this host's name, in the names of the store's temporary folders.
_HOST_TAG = __import__("hashlib").sha256(__import__("socket").gethostname().encode()).hexdigest()[:6]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Entry:
    """A loaded cache entry: its arrays, the parts of its key and free metadata."""

    key: str
    path: Path
    arrays: Mapping[str, np.ndarray]
    parts: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class Store:
    """A content-addressed cache of arrays under ``root`` (default ``<artifacts>/cache``).

    >>> import tempfile, numpy as np
    >>> store = Store(tempfile.mkdtemp())
    >>> parts = {"model": "m", "task": "pos"}
    >>> store.load("demo", parts) is None
    True
    >>> entry = store.save("demo", parts, {"X": np.arange(3.0)})
    >>> store.load("demo", parts)["X"].tolist()
    [0.0, 1.0, 2.0]
    """

    def __init__(self, root: str | os.PathLike | None = None, *, verify: bool = True):
        self.root = Path(root) if root is not None else artifacts_dir() / "cache"
        self.verify = verify

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        """The entry key: sha256 of the canonical JSON of ``parts``."""
        return sha256_text(canonical_json(dict(parts)))[:40]

    def path(self, kind: str, parts: Mapping[str, Any]) -> Path:
        return self.root / kind / self.key(parts)

    def load(self, kind: str, parts: Mapping[str, Any], *, mmap: bool = False) -> Entry | None:
        """The entry for ``parts``, or None if absent; a damaged entry is removed (and None)."""
        folder = self.path(kind, parts)
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():
            if folder.exists():  # a folder without a manifest cannot come from save(); clear it
                log.warning("cache entry %s has no manifest; removing it", folder)
                shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            arrays = {}
            for name, info in manifest["arrays"].items():
                file = folder / f"{name}.npy"
                if file.stat().st_size != info["bytes"]:
                    raise ValueError(f"{file} has {file.stat().st_size} bytes, "
                                     f"manifest says {info['bytes']}")
                if self.verify and sha256_file(file) != info["sha256"]:
                    raise ValueError(f"{file} does not match its sha256 in the manifest")
                arrays[name] = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, KeyError) as err:
            log.warning("cache entry %s is damaged (%s); removing it so it is rebuilt", folder, err)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return Entry(manifest["key"], folder, arrays, manifest["parts"], manifest.get("meta", {}))

    def save(self, kind: str, parts: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
             meta: Mapping[str, Any] | None = None) -> Entry:
        """Write an entry atomically: build it in a temporary folder, then rename it into place.

        A cache folder that cannot be written or a full disk raises
        :class:`~ftgeo._util.StorageError` naming the entry, and leaves no temporary folder.
        """
        key = self.key(parts)
        final = self.root / kind / key
        tmp_root = self.root / ".tmp"
        with writing_to(final):
            tmp_root.mkdir(parents=True, exist_ok=True)
            self._sweep(tmp_root)
            tmp = tmp_root / f"{key}.{os.getpid()}.{_HOST_TAG}{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                info = {}
                for name, arr in arrays.items():
                    file = tmp / f"{name}.npy"
                    np.save(file, np.asarray(arr), allow_pickle=False)
                    info[name] = {"bytes": file.stat().st_size, "sha256": sha256_file(file),
                                  "shape": list(np.shape(arr)), "dtype": str(np.asarray(arr).dtype)}
                atomic_write_json(tmp / MANIFEST, {"key": key, "kind": kind, "parts": dict(parts),
                                                    "arrays": info, "meta": dict(meta or {})})
                final.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(tmp, final)
                except OSError:
                    # Another process finished the same entry first: keep theirs.
                    if not (final / MANIFEST).exists():
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.debug("cache: wrote %s/%s", kind, key)
        return Entry(key, final, dict(arrays), dict(parts), dict(meta or {}))

    def get_or_build(self, kind: str, parts: Mapping[str, Any],
                     build: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]],
                     *, mmap: bool = False) -> tuple[Entry, bool]:
        """Load the entry for ``parts`` or build and save it; returns (entry, was_cached).

        A missing entry is built under a lock of its own (``.locks/<kind>.<key>``), so that
        processes that need it at the same time (chapters side by side, jobs of a cluster)
        build it once: the others wait, then load it.
        """
        from ._util import file_lock

        entry = self.load(kind, parts, mmap=mmap)
        if entry is not None:
            return entry, True
        lock = self.root / ".locks" / f"{kind}.{self.key(parts)}"
        with file_lock(lock, what=f"builds the cache entry {kind}/{self.key(parts)}"):
            entry = self.load(kind, parts, mmap=mmap)
            if entry is not None:  # built by the process this one waited for
                return entry, True
            arrays, meta = build()
            return self.save(kind, parts, arrays, meta), False

    @staticmethod
    def _sweep(tmp_root: Path) -> None:
        """Remove temporary folders (``<key>.<pid>.<host tag><random>``) left by processes of
        this host that no longer run. Another host's are left alone: on a cluster's shared
        file system its PIDs mean nothing here, and its writer may well be alive."""
        mine = [p for p in tmp_root.iterdir()
                if p.name.split(".")[2:3] and p.name.split(".")[2].startswith(_HOST_TAG)]
        remove_left_by_dead_processes(mine, pid_field=1)
