"""The artifact cache: keys, round trips, atomic writes, damaged entries."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ftgeo.store import Store


def test_round_trip_and_keys(store):
    parts = {"model": "abc", "task": "pos", "split": "train"}
    assert store.load("representations", parts) is None
    store.save("representations", parts, {"X": np.eye(3, dtype=np.float32)}, meta={"note": "x"})
    entry = store.load("representations", parts)
    np.testing.assert_array_equal(entry["X"], np.eye(3))
    assert entry.meta == {"note": "x"} and dict(entry.parts) == parts
    assert store.load("representations", {**parts, "split": "test"}) is None
    assert Store.key(parts) == Store.key(dict(reversed(list(parts.items()))))


def test_get_or_build_builds_once(store):
    calls = []

    def build():
        calls.append(1)
        return {"X": np.arange(4)}, {}

    a, cached_a = store.get_or_build("k", {"a": 1}, build)
    b, cached_b = store.get_or_build("k", {"a": 1}, build)
    assert (cached_a, cached_b) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(a["X"], b["X"])


def _build_slowly(root: str, log: str) -> float:
    """get_or_build of one entry whose build takes a second and notes each call in ``log``."""
    def build():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return {"X": np.arange(5)}, {}

    from pathlib import Path

    ready = Path(log).parent / "ready"  # both processes look the entry up at the same moment
    ready.mkdir(exist_ok=True)
    (ready / str(os.getpid())).touch()
    end = time.time() + 60
    while len(list(ready.iterdir())) < 2 and time.time() < end:
        time.sleep(0.01)
    entry, _ = Store(root).get_or_build("k", {"a": 1}, build)
    return float(entry["X"].sum())


def test_processes_that_need_one_entry_at_once_build_it_once(tmp_path):
    """Two processes missing the same entry at the same moment: one builds, the other waits
    for it and loads it (without the entry's lock both would build)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log = tmp_path / "builds.log"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        sums = list(pool.map(_build_slowly, [str(tmp_path / "cache")] * 2, [str(log)] * 2))
    assert sums == [10.0, 10.0]
    assert len(log.read_text().split()) == 1
    assert sorted(p.name for p in (tmp_path / "cache" / "k").iterdir()) == [Store.key({"a": 1})]


def test_failed_write_leaves_no_entry(store, monkeypatch):
    parts = {"a": 1}
    real_save = np.save
    written = []

    def failing_save(file, arr, **kw):
        if written:
            raise OSError("disk full")
        written.append(file)
        real_save(file, arr, **kw)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        store.save("k", parts, {"X": np.ones(3), "Y": np.ones(3)})
    monkeypatch.undo()
    assert store.load("k", parts) is None
    assert not any((store.root / ".tmp").iterdir())


def test_write_killed_half_way_leaves_no_entry(tmp_path):
    """A process killed (SIGKILL) while writing leaves no entry; the next save cleans up."""
    root = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import time, numpy as np
        from ftgeo.store import Store
        real = np.save
        def slow(file, arr, **kw):
            real(file, arr, **kw)
            print("wrote", file, flush=True)
            time.sleep(60)
        np.save = slow
        Store({str(root)!r}).save("k", {{"a": 1}}, {{"X": np.ones(1000), "Y": np.ones(1000)}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("wrote"), line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(root)
    assert store.load("k", {"a": 1}) is None
    assert len(list((root / ".tmp").iterdir())) == 1  # the dead process's partial folder
    store.save("k", {"b": 2}, {"X": np.zeros(2)})  # sweeps folders of dead processes
    assert list((root / ".tmp").iterdir()) == []
    assert store.load("k", {"a": 1}) is None


def test_damaged_entry_is_detected_and_rebuilt(store):
    parts = {"a": 1}
    entry = store.save("k", parts, {"X": np.arange(100, dtype=np.float64)})
    file = entry.path / "X.npy"
    raw = bytearray(file.read_bytes())
    raw[-1] ^= 0xFF  # same size, different content
    file.write_bytes(bytes(raw))
    assert store.load("k", parts) is None
    assert not entry.path.exists()
    _, cached = store.get_or_build("k", parts, lambda: ({"X": np.arange(100.0)}, {}))
    assert not cached


def test_truncated_entry_is_detected(store):
    entry = store.save("k", {"a": 1}, {"X": np.arange(100, dtype=np.float64)})
    file = entry.path / "X.npy"
    file.write_bytes(file.read_bytes()[:50])
    time.sleep(0.01)
    assert store.load("k", {"a": 1}) is None


def test_a_sweep_leaves_another_hosts_temporary_folders_alone(tmp_path):
    """On a shared file system, a PID from another host means nothing here: its temporary
    folder may belong to a live writer, and is left for its own host to sweep."""
    from ftgeo import store as store_module

    root = tmp_path / "cache"
    (root / ".tmp").mkdir(parents=True)
    dead = 2**22 + 12345  # no such process here
    other = root / ".tmp" / f"key.{dead}.zzzzzz1234abcd"
    mine = root / ".tmp" / f"key.{dead}.{store_module._HOST_TAG}1234abcd"
    other.mkdir()
    mine.mkdir()
    Store(root).save("k", {"a": 1}, {"X": np.zeros(2)})
    assert other.exists() and not mine.exists()
