"""Faults the pipeline survives: killed (SIGKILL) during a notebook, an extraction or
fine-tuning and restarted; a damaged checkpoint; two pipelines on one artifacts directory;
a full disk; an unwritable folder. README.md's "Reliability" table lists them."""

import errno
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ftgeo import finetune as ft
from ftgeo import load_model, pipeline
from ftgeo._util import StorageError, atomic_write_text, storage_error
from ftgeo.extract import COUNTERS, representations
from ftgeo.finetune import FinetuneSettings
from ftgeo.pipeline import run_config
from ftgeo.store import Store

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from conftest import toy_notebook  # noqa: E402
from test_finetune import _splits, _synthetic  # noqa: E402

# Subprocesses inherit the environment: conftest's offline settings and FTGEO_ARTIFACTS.


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _holder(script: str, tmp_path: Path) -> subprocess.Popen:
    """A Python subprocess running ``script``; returns once it prints its first line."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", line
    return proc


SAVE = "import ftgeo\nftgeo.save_metrics(output_dir, {'twice': 2 * value})"


def _config(tmp_path: Path, model: Path, notebooks: list[str]) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({"name": "faults", "model": str(model), "notebook_dir": "nbs",
                                    "parameters": {"value": 2}, "notebooks": notebooks}))
    return path


@pytest.fixture()
def artifacts(tmp_path, monkeypatch) -> Path:
    """A fresh artifacts directory (FTGEO_ARTIFACTS), for this process and its children."""
    folder = tmp_path / "artifacts"
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(folder))
    return folder


def _make_unwritable(folder: Path, monkeypatch) -> None:
    """Make ``folder`` refuse new files and folders: chmod for a normal user; for root, whom
    the kernel lets write anywhere, the same PermissionError from os.mkdir and os.open."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return
    real_mkdir, real_open = os.mkdir, os.open

    def inside(path) -> bool:
        return Path(os.path.abspath(os.fspath(path))).is_relative_to(folder)

    def mkdir(path, mode=0o777, *, dir_fd=None):
        if inside(path) and not os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        if flags & os.O_CREAT and inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


@pytest.fixture()
def restore_modes(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:  # let pytest remove chmod-ed folders
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)


# --------------------------------------------------------------------------------------
# Killed and restarted
# --------------------------------------------------------------------------------------

# A run's fingerprint includes the library's source; pinned here so that an edit of
# lib/ftgeo made while this test runs (in a working copy) does not make the first run stale.
PIN_LIBRARY = "from ftgeo import pipeline; pipeline._library_digest = lambda: 'pinned'"


def test_pipeline_killed_during_a_notebook_redoes_only_that_notebook(tmp_path, artifacts,
                                                                     tiny_bert_dir, monkeypatch):
    """SIGKILL while the second notebook runs; the restart skips the first and finishes the
    second; the killed run's partial notebook is never taken for a finished one."""
    (tmp_path / "nbs").mkdir()
    mark, hang = tmp_path / "second_started", tmp_path / "hang"
    hang.touch()
    toy_notebook(tmp_path / "nbs" / "first.ipynb", SAVE)
    toy_notebook(tmp_path / "nbs" / "second.ipynb",
              f"import os, pathlib, time\npathlib.Path({str(mark)!r}).write_text(str(os.getpid()))\n"
              f"while pathlib.Path({str(hang)!r}).exists():\n    time.sleep(0.1)", SAVE)
    config = _config(tmp_path, tiny_bert_dir, ["first", "second"])
    log = (tmp_path / "pipeline.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{PIN_LIBRARY}; import sys; sys.exit(pipeline.main())",
         "run", "--config", str(config)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: mark.exists() and mark.read_text(), 120, "the second notebook to start")
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind runs
        proc.wait()
        if mark.exists() and mark.read_text():
            _kill(int(mark.read_text()))  # its kernel, orphaned in its own session
    runs = {p.name.split("--")[0]: p for p in (artifacts / "runs").iterdir()}
    first_output = runs["first"] / "first.ipynb"
    first_mtime = first_output.stat().st_mtime_ns
    assert (runs["second"] / ".second.running.ipynb").exists()
    assert not (runs["second"] / "second.ipynb").exists()

    hang.unlink()
    monkeypatch.setattr(pipeline, "_library_digest", lambda: "pinned")
    summary = run_config(config)  # the restart: the dead process's lock is gone with it
    assert summary["skipped"] == ["first"] and summary["executed"] == ["second"]
    assert first_output.stat().st_mtime_ns == first_mtime
    assert json.loads((runs["second"] / "metrics.json").read_text())["twice"] == 4
    assert (runs["second"] / "second.ipynb").exists()
    assert not list(runs["second"].glob(".*.running.ipynb"))
    assert run_config(config)["skipped"] == ["first", "second"]


def test_extraction_killed_while_saving_leaves_no_entry_and_the_rerun_builds_it(
        tmp_path, tiny_bert_dir):
    """SIGKILL while representations are written to the cache: no entry (only a temporary
    folder, swept by the next save); the rerun extracts and caches; the third is a hit."""
    cache = tmp_path / "cache"
    proc = _holder(f"""
        import sys, time
        import numpy as np
        sys.path.insert(0, {str(TESTS)!r})
        from test_finetune import _synthetic
        from ftgeo import load_model
        from ftgeo.extract import representations
        from ftgeo.store import Store
        real = np.save
        def slow(file, arr, **kw):
            real(file, arr, **kw)
            print("ready", flush=True)
            time.sleep(120)
        np.save = slow
        representations(load_model({str(tiny_bert_dir)!r}), _synthetic("word"),
                        store=Store({str(cache)!r}))
    """, tmp_path)
    proc.kill()
    proc.wait()
    store = Store(cache)
    leftovers = list((cache / ".tmp").iterdir())
    assert len(leftovers) == 1 and f".{proc.pid}." in leftovers[0].name
    assert not (cache / "representations").exists() or not any(
        (cache / "representations").iterdir())

    model, data = load_model(str(tiny_bert_dir)), _synthetic("word")
    before = dict(COUNTERS)
    X = representations(model, data, store=store)
    assert COUNTERS["cache_misses"] == before["cache_misses"] + 1
    assert COUNTERS["forward_batches"] > before["forward_batches"]
    assert list((cache / ".tmp").iterdir()) == []  # the dead process's folder is swept
    again = representations(model, data, store=store)
    assert COUNTERS["cache_hits"] == before["cache_hits"] + 1
    np.testing.assert_array_equal(X, again)


def test_finetuning_killed_after_a_checkpoint_resumes_from_it(tmp_path, tiny_bert_dir, after_step):
    """SIGKILL after step 5 (checkpoint at step 3); the rerun trains steps 4-9 only, sweeps
    the dead process's temporary files and ends with the weights of an unbroken run."""
    from safetensors.torch import load_file

    splits = _splits("pair")
    settings = FinetuneSettings(epochs=3, learning_rate=1e-3, batch_size=8, n_snapshots=4)
    proc = _holder(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from test_finetune import _splits
        from ftgeo import finetune as ft, load_model
        from ftgeo.store import Store
        ft.CHECKPOINT_EVERY_S = 0.0
        def hang(step):
            if step == 5:
                print("ready", flush=True)
                time.sleep(120)
        ft._AFTER_STEP["hook"] = hang
        ft.finetune(load_model({str(tiny_bert_dir)!r}),
                    _splits("pair"),
                    ft.FinetuneSettings(epochs=3, learning_rate=1e-3, batch_size=8, n_snapshots=4),
                    store=Store({str(tmp_path / "cache")!r}), root={str(tmp_path / "b")!r})
    """, tmp_path)
    proc.kill()
    proc.wait()
    folder = next((tmp_path / "b" / "finetune").iterdir())
    assert (folder / "checkpoint.pt").exists() and not (folder / "result.json").exists()
    # what a kill during a checkpoint or final-weight write leaves behind
    (folder / f".checkpoint.{proc.pid}.pt").write_bytes(b"half a checkpoint")
    (folder / f".final.{proc.pid}").mkdir()

    store = Store(tmp_path / "cache")
    trained = []
    after_step(trained.append)
    resumed = ft.finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                          root=tmp_path / "b")
    after_step(None)
    assert trained == [4, 5, 6, 7, 8, 9]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    whole = ft.finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                        root=tmp_path / "a")
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    a = load_file(str(whole.folder / "final" / "model.safetensors"))
    b = load_file(str(resumed.folder / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_checkpoint_is_discarded_and_training_starts_over(tmp_path, tiny_bert_dir,
                                                                  store, caplog):
    splits = {"train": _synthetic("sentence")}
    settings = FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, n_snapshots=2)
    model = load_model(str(tiny_bert_dir))
    _, folder, _ = ft.run_folder(model, splits["train"], settings, tmp_path / "b")
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING, logger="ftgeo.finetune"):
        damaged = ft.finetune(model, splits, settings, store=store, probe_splits=(),
                              root=tmp_path / "b")
    assert "cannot be read" in caplog.text and "training from step 0" in caplog.text
    clean = ft.finetune(model, splits, settings, store=store, probe_splits=(), root=tmp_path / "a")
    np.testing.assert_array_equal(damaged.losses, clean.losses)
    assert not (folder / "checkpoint.pt").exists()


# --------------------------------------------------------------------------------------
# Two pipelines on one artifacts directory: per-run locks
# --------------------------------------------------------------------------------------

def test_a_second_pipeline_waits_for_the_run_another_executes_and_then_reuses_it(
        tmp_path, artifacts, tiny_bert_dir, caplog):
    """Each notebook run has its own lock: a second pipeline on the same config waits while the
    first executes it, names who it waits for, and then finds it current (nothing twice)."""
    (tmp_path / "nbs").mkdir()
    toy_notebook(tmp_path / "nbs" / "first.ipynb", "import time\ntime.sleep(8)\n" + SAVE)
    config = _config(tmp_path, tiny_bert_dir, ["first"])
    first = subprocess.Popen([sys.executable, "-m", "ftgeo", "run", "--config", str(config)],
                             cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        (run,) = pipeline.plan(pipeline.load_config(config))
        lock = run.folder / ".lock"
        deadline = time.time() + 60
        while not (lock.is_file() and lock.read_text().strip()):  # the first holds it
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.2)
        with caplog.at_level(logging.INFO, logger="ftgeo"):
            second = run_config(config)
        assert second["executed"] == [] and second["skipped"] == ["first"]
        assert f"waiting for PID {first.pid} on " in caplog.text
        assert first.wait(timeout=60) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    assert json.loads((run.folder / "metrics.json").read_text())["twice"] == 4


def test_a_lock_whose_holder_died_is_free_and_one_not_waited_for_names_its_holder(tmp_path):
    from ftgeo._util import LockedError, file_lock

    path = tmp_path / "run" / ".lock"
    holder = _holder(f"""
        import time
        from ftgeo._util import file_lock
        with file_lock({str(path)!r}):
            print("ready", flush=True)
            time.sleep(120)
    """, tmp_path)
    try:
        with pytest.raises(LockedError, match=f"held by PID {holder.pid} on .*, started "):
            with file_lock(path, wait=False):
                pass
    finally:
        holder.kill()  # SIGKILL: the operating system releases its lock
        holder.wait()
    with file_lock(path, wait=False):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert path.read_text() == ""  # released: the holder's details are cleared


# --------------------------------------------------------------------------------------
# Full disk, unwritable folder
# --------------------------------------------------------------------------------------

def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    """mkstemp makes its file 0600; a file written atomically must be as readable as one
    written by open() under the process's umask (executed notebooks, metrics shared with
    others)."""
    atomic_write_text(tmp_path / "atomic.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "atomic.json").stat().st_mode & 0o777 == (
        tmp_path / "plain.json").stat().st_mode & 0o777


def test_full_disk_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "out" / "metrics.json"
    atomic_write_text(path, "old")
    monkeypatch.setattr(os, "fsync", _disk_full)  # after the temporary file is written
    with pytest.raises(StorageError) as err:
        atomic_write_text(path, "new")
    message = str(err.value)
    assert f"cannot write {path}: the disk is full" in message
    assert "Free space" in message and "FTGEO_ARTIFACTS" in message
    assert err.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_full_disk_in_the_cache_leaves_no_partial_entry(store, monkeypatch):
    real_save, written = np.save, []

    def fill_up(file, arr, **kw):
        if written:
            with open(file, "wb") as f:
                f.write(b"\x93NUMPY half")  # a partial file, as a real full disk leaves
            _disk_full()
        written.append(file)
        real_save(file, arr, **kw)

    monkeypatch.setattr(np, "save", fill_up)
    parts = {"a": 1}
    with pytest.raises(StorageError, match=re.escape(f"cannot write {store.path('k', parts)}: "
                                                      "the disk is full")):
        store.save("k", parts, {"X": np.ones(3), "Y": np.ones(3)})
    monkeypatch.undo()
    assert list((store.root / ".tmp").iterdir()) == [] and not store.path("k", parts).exists()
    _, cached = store.get_or_build("k", parts, lambda: ({"X": np.ones(3), "Y": np.ones(3)}, {}))
    assert not cached and store.load("k", parts) is not None


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """torch.save writes into a Python file, so the disk's OSError (with its errno) reaches
    the message; the previous checkpoint stays and no temporary file is left."""

    class FullFile(io.FileIO):
        def write(self, data):
            _disk_full()

    ckpt = tmp_path / "checkpoint.pt"
    ft._save_checkpoint(ckpt, {"step": 3})
    monkeypatch.setattr(ft, "open", lambda path, mode: FullFile(path, mode), raising=False)
    with pytest.raises(StorageError, match=re.escape(f"cannot write {ckpt}: the disk is full")):
        ft._save_checkpoint(ckpt, {"step": 6, "weights": torch.zeros(1000)})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert torch.load(ckpt, weights_only=False) == {"step": 3}


def test_unwritable_cache_is_reported_with_what_to_do(tmp_path, monkeypatch, restore_modes):
    store = Store(tmp_path / "cache")
    _make_unwritable(store.root, monkeypatch)
    with pytest.raises(StorageError) as err:
        store.save("k", {"a": 1}, {"X": np.ones(3)})
    message = str(err.value)
    assert f"cannot write {store.path('k', {'a': 1})}: permission denied" in message
    assert "Make the folder writable" in message and "set FTGEO_ARTIFACTS to a folder you can" \
        in message
    assert err.value.errno == errno.EACCES
    monkeypatch.undo()
    store.root.chmod(0o700)
    assert list(store.root.iterdir()) == []


def test_unwritable_artifacts_directory_stops_the_command_line(tmp_path, artifacts, monkeypatch,
                                                               tiny_bert_dir, capsys,
                                                               restore_modes):
    (tmp_path / "nbs").mkdir()
    toy_notebook(tmp_path / "nbs" / "first.ipynb", SAVE)
    config = _config(tmp_path, tiny_bert_dir, ["first"])
    _make_unwritable(artifacts, monkeypatch)
    assert pipeline.main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ftgeo: error: cannot write {artifacts / 'runs'}/first--")
    assert ": permission denied" in err
    assert f"FTGEO_ARTIFACTS to a folder you can write to (now {artifacts})" in err


def test_unwritable_run_folder_names_it(tmp_path, artifacts, monkeypatch, tiny_bert_dir,
                                        restore_modes):
    (tmp_path / "nbs").mkdir()
    toy_notebook(tmp_path / "nbs" / "first.ipynb", SAVE)
    config = _config(tmp_path, tiny_bert_dir, ["first"])
    _make_unwritable(artifacts / "runs", monkeypatch)
    with pytest.raises(StorageError, match=r"cannot write .*/runs/first--tiny-bert\w*--\w+: "
                                           "permission denied"):
        run_config(config)


@pytest.mark.parametrize("err, expected", [
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "the disk is full"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    (RuntimeError('Error while serializing: I/O error: No space left on device (os error 28) '
                  'at path "/a/.tmpX"'), "the disk is full"),  # safetensors' Rust writer
    (OSError(errno.ENOENT, "No such file or directory"), None),
    (RuntimeError("unexpected pos 704 vs 598"), None),
    # a failed notebook whose traceback quotes a disk error is not itself a write failure
    (RuntimeError("PapermillExecutionError: ... StorageError: ... (os error 28)"), None)])
def test_which_errors_become_storage_errors(err, expected):
    got = storage_error(err, "/a/model.safetensors")
    assert (got is None) if expected is None else expected in str(got)
