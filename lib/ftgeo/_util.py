"""Small shared helpers: input checks, progress bars, hashing and atomic writes.

Private to the package; the public names live in the method modules.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm

log = logging.getLogger(__name__)

T = TypeVar("T")

# Progress bars are on by default in a terminal; notebooks and tests turn them off with
# ``ftgeo.set_progress(False)`` or the environment variable FTGEO_PROGRESS=0.
_PROGRESS = {"enabled": os.environ.get("FTGEO_PROGRESS", "1") not in {"0", "false", "no"}}


#: MKL's dynamic threading (its default) may use fewer threads than asked while the machine is
#: busy, which changes the order of its floating-point sums and so the last digits of a result:
#: golden chapter 3 moved in its third decimal (0.462 -> 0.460) with two CPU-bound processes
#: beside it, and did not with this off. ``import ftgeo`` turns it off for its own process and
#: every kernel or worker it starts, unless the environment already says otherwise (MKL reads
#: the variable when it first runs, after the import).
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

#: The variables a process's thread pools read when they load: torch's (OpenMP), MKL's, OpenBLAS's.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_thread_variables(threads: int | str) -> None:
    """Give the processes this one starts (a notebook kernel, a worker) ``threads`` threads
    in each pool, with MKL's count fixed (``MKL_DYNAMIC=FALSE``); this process's pools have
    loaded already (use ``torch.set_num_threads`` for it)."""
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    os.environ["MKL_DYNAMIC"] = "FALSE"


def set_progress(enabled: bool) -> None:
    """Turn every ftgeo progress bar on or off."""
    _PROGRESS["enabled"] = bool(enabled)


#: A file that long loops report into (the pipeline sets it for each notebook it runs, and
#: shows the report in the terminal while the notebook's kernel works).
STATUS_ENV = "FTGEO_STATUS"

#: The device models load onto when none is named: ``auto`` (the default), ``cpu``,
#: ``cuda`` or ``cuda:N``; ``python -m ftgeo run --device`` and a config's ``device`` set it
#: for the run and the notebooks it executes.
DEVICE_ENV = "FTGEO_DEVICE"


def resolve_device(device: Any = None):
    """The torch device for ``device``: ``"auto"`` is the first CUDA GPU when torch sees one,
    else the CPU; None reads ``FTGEO_DEVICE`` (default ``auto``). An unknown name, or a GPU
    that is not there, raises ValueError saying what to pass instead.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: device 'tpu' is not one of auto, cpu, cuda, cuda:N
    """
    import torch

    source = "" if device is not None else f" (from {DEVICE_ENV})"
    name = str(device if device is not None else os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check(re.fullmatch(r"cpu|cuda(:\d+)?", name) is not None,
          f"device {name!r}{source} is not one of auto, cpu, cuda, cuda:N")
    chosen = torch.device(name)
    if chosen.type == "cuda":
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        check(torch.cuda.is_available(), f"device {name!r}{source}: torch ({torch.__version__}, {build}) "
              "sees no CUDA GPU here; use --device cpu (or auto, which falls back on the CPU)")
        check(chosen.index is None or chosen.index < torch.cuda.device_count(),
              f"device {name!r}{source}: torch sees {torch.cuda.device_count()} GPU(s), "
              f"numbered from 0")
    return chosen
_STATUS_EVERY_S = 1.0
_STATUS = {"last": 0.0}


def report_status(text: str, *, force: bool = False) -> None:
    """Write one line of what the library is doing into the file named by FTGEO_STATUS (if
    set), at most once a second unless ``force``; never raises (a report is best effort)."""
    import time

    path = os.environ.get(STATUS_ENV)
    now = time.monotonic()
    if not path or (not force and now - _STATUS["last"] < _STATUS_EVERY_S):
        return
    _STATUS["last"] = now
    try:
        tmp = f"{path}.{os.getpid()}.tmp"
        Path(tmp).write_text(text.strip() + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


class _Reporter(std_tqdm):
    """A tqdm bar drawn nowhere that reports its line (description, count, rate, postfix)
    through :func:`report_status`: a notebook's kernel shows no bar in the terminal, but the
    pipeline that runs it shows this report."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("bar_format",
                          "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        super().__init__(*args, file=open(os.devnull, "w"), mininterval=_STATUS_EVERY_S,  # noqa: SIM115
                         **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        report_status(self.format_meter(**self.format_dict))

    def close(self) -> None:
        if not self.disable:
            report_status(self.format_meter(**self.format_dict), force=True)
        fp = self.fp
        super().close()
        fp.close()


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             enabled: bool | None = None, **kwargs: Any) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar unless progress bars are off; when they are off and
    FTGEO_STATUS is set (the pipeline sets it), the bar reports there instead."""
    on = _PROGRESS["enabled"] if enabled is None else enabled
    if on:
        return iter(tqdm(iterable, total=total, desc=desc, leave=False, **kwargs))
    if os.environ.get(STATUS_ENV):
        return iter(_Reporter(iterable, total=total, desc=desc, leave=False, **kwargs))
    return iter(iterable)


def progress_bar(*, desc: str, unit: str = "it", total: int | None = None,
                 enabled: bool | None = None) -> tqdm:
    """A manually updated tqdm bar (``bar.update()``), off when progress bars are off (but
    reporting through FTGEO_STATUS when that is set)."""
    on = _PROGRESS["enabled"] if enabled is None else enabled
    if not on and os.environ.get(STATUS_ENV):
        return _Reporter(total=total, desc=desc, unit=unit, leave=False)
    return tqdm(total=total, desc=desc, unit=unit, disable=not on, leave=False)


_BLAS = {}


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run LAPACK's symmetric eigensolvers with one BLAS thread.

    They are built of level-2 BLAS calls that OpenBLAS splits over threads at a loss: on
    this 2-core machine the eigendecomposition of a 700 x 700 matrix took 0.1 s with one
    thread and 1.5 to 7 s with two while another process was busy. Matrix products keep
    every thread.
    """
    if "controller" not in _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS["controller"] = ThreadpoolController()
    with _BLAS["controller"].limit(limits=1, user_api="blas"):
        yield


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch with one intra-op thread, then restore the count it had.

    Small networks trained in mini-batches (the enhancement classifier's batches of 32) spend
    their time in thread hand-offs: on this 2-core machine, with another process busy, 470
    Adam steps of five such networks took 12 s with two threads and 1 s with one.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds.

    >>> check(1 < 2, "never raised")
    >>> check(False, "learning_rate must be > 0, got -1")
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be > 0, got -1
    """
    if not condition:
        raise ValueError(message)


def check_count(value: Any, name: str, *, optional: bool = False) -> int | None:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless it is a whole number >= 1
    (a bool is not one); None passes where ``optional``.

    >>> check_count(3.0, "epochs")
    3
    >>> check_count(None, "glue_epochs", optional=True)
    >>> check_count(2.5, "finetune: n_seeds")
    Traceback (most recent call last):
    ...
    ValueError: finetune: n_seeds must be a whole number >= 1, got 2.5
    """
    if optional and value is None:
        return None
    whole = (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
             and float(value).is_integer() and value >= 1)
    check(whole, f"{name} must be a whole number >= 1{' or None' if optional else ''}, got {value!r}")
    return int(value)


def keyed_tasks(keyed: Iterable[tuple]) -> list[str]:
    """The tasks of a {(task, state, ...): value} mapping (or of its keys), in order of first
    appearance.

    >>> keyed_tasks({("pos", "pretrained"): 0.8, ("pos", "finetuned"): 0.9, ("dep", "pretrained"): 0.7})
    ['pos', 'dep']
    """
    return list(dict.fromkeys(key[0] for key in keyed))


def check_Xy(X: np.ndarray, y: np.ndarray | None = None, *, name: str = "X") -> None:
    """Check a representation matrix (and labels): 2-D, finite, matching lengths."""
    X = np.asarray(X)
    check(X.ndim == 2, f"{name} must have shape (n_samples, n_features), got shape {X.shape}")
    check(bool(np.isfinite(X).all()),
          f"{name} contains NaN or infinite values ({int((~np.isfinite(X)).sum())} entries)")
    if y is not None:
        y = np.asarray(y)
        check(y.ndim == 1 and len(y) == len(X),
              f"y must have shape (n_samples,) = ({len(X)},) to match {name}, got {y.shape}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, the basis of every cache key.

    >>> canonical_json({"b": 1, "a": [1, 2]})
    '{"a":[1,2],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    """Hex sha256 of a string.

    >>> sha256_text("")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def array_digest(*arrays: np.ndarray) -> str:
    """Hex sha256 of arrays' dtypes, shapes and bytes (the store key of data passed as arrays).

    >>> array_digest(np.zeros(2)) == array_digest(np.zeros(2)) != array_digest(np.zeros(3))
    True
    """
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def pid_alive(pid: int) -> bool:
    """True if a process with this PID runs (or exists but belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_left_by_dead_processes(paths: Iterable[Path], pid_field: int) -> None:
    """Remove the temporary files and folders among ``paths`` whose writer has died: the PID is
    field ``pid_field`` of the name split at dots (``.checkpoint.<pid>.pt``: field 2). Names
    without a PID there, and this process's own, are left alone."""
    import shutil

    for path in paths:
        try:
            pid = int(path.name.split(".")[pid_field])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            log.debug("removing %s, left by process %d, which no longer runs", path, pid)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def slurm_job_id() -> str | None:
    """This process's Slurm job, as ``squeue`` and ``scancel`` name it: ``ARRAYID_TASK`` for a
    task of a job array, else the job id; None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class LockedError(RuntimeError):
    """A lock that :func:`file_lock` was told not to wait for is held by another process."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


@contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True, what: str = "") -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` while the block runs; yields ``path``.

    The holder writes its host, PID, start time, command and Slurm job id (if any) into the
    file, so that a process that finds the lock taken can say who holds it. ``wait``: block
    until the holder is done (logging who it waits for); else raise :class:`LockedError`
    at once. The operating system releases the lock when its process ends, however it ends,
    so a killed process leaves no stale lock. ``flock`` works across the hosts of a cluster
    on a shared file system that supports it (NFSv4, Lustre, GPFS, BeeGFS with locking on).
    """
    import fcntl
    import socket
    import sys
    import time

    path = Path(path)
    with writing_to(path.parent):  # the folder it locks, which an error names
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd)
            if not wait:
                raise LockedError(path, holder) from None
            log.info("waiting for %s%s to finish (lock %s)", holder, f", which {what}" if what else "",
                     path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv),
                  "slurm_job": slurm_job_id()}
        with writing_to(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        try:
            yield path
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)  # the next holder writes its own details
    finally:
        os.close(fd)  # releases the lock


def lock_holder(fd: int) -> str:
    """The holder's details recorded in a lock file, as text for a message."""
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        where = f" on {holder['host']}" if holder.get("host") else ""
        job = f", Slurm job {holder['slurm_job']}" if holder.get("slurm_job") else ""
        return f"PID {holder['pid']}{where}{job}, started {holder['started']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process whose PID is not recorded yet"


_UMASK = os.umask(0)  # read once at import (umask can only be read by setting it)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *,
                       setting: str | None = "FTGEO_ARTIFACTS") -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written.

    A folder that cannot be written or a full disk raises :class:`StorageError` (see
    :func:`writing_to`; ``setting`` is the environment variable it suggests), and the
    temporary file is removed.
    """
    path = Path(path)
    with writing_to(path, setting=setting):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp's 0600 -> as open() would
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | os.PathLike, text: str, *,
                      setting: str | None = "FTGEO_ARTIFACTS") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`atomic_write_bytes` does."""
    atomic_write_bytes(path, text.encode("utf-8"), setting=setting)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


class StorageError(OSError):
    """A write failed because its folder cannot be written or its disk is full.

    The message names the path and what to do; ``errno`` is the original error number.
    """

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


#: Error numbers that mean "the folder cannot be written" and "the disk is full".
UNWRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _errno_of(err: BaseException) -> int | None:
    """The error number of an OSError, or of a Rust writer's error (safetensors says
    "... (os error 28) ..."; it raises its own exception type, not OSError)."""
    if isinstance(err, OSError):
        return err.errno
    if not (type(err).__name__ == "SafetensorError"
            or str(err).startswith("Error while serializing")):
        return None  # never read a number out of other messages (a notebook's traceback)
    found = re.search(r"\(os error (\d+)\)", str(err))
    return int(found.group(1)) if found else None


def storage_error(err: BaseException, path: str | os.PathLike, *,
                  setting: str | None = "FTGEO_ARTIFACTS") -> StorageError | None:
    """A :class:`StorageError` naming ``path`` if ``err`` means "not writable" or "disk full",
    else None. ``setting``: the environment variable that moves the folder elsewhere (None:
    no setting does).

    >>> print(storage_error(OSError(errno.ENOSPC, "No space left on device"), "/a/b.npy",
    ...                     setting="FTGEO_X"))
    cannot write /a/b.npy: the disk is full ([Errno 28] No space left on device). Free space ...
    >>> storage_error(OSError(errno.ENOENT, "No such file"), "/a/b.npy") is None
    True
    """
    code = _errno_of(err)
    if code not in FULL_ERRNOS | UNWRITABLE_ERRNOS:
        return None
    full = code in FULL_ERRNOS
    elsewhere = ""
    if setting is not None:
        if setting == "FTGEO_ARTIFACTS":
            now = f"now {artifacts_dir()}"
        else:
            now = f"now {os.environ[setting]}" if os.environ.get(setting) else "not set now"
        elsewhere = (f", or set {setting} to a folder "
                     f"{'on a disk with room' if full else 'you can write to'} ({now})")
    if full:
        message = (f"cannot write {path}: the disk is full ({err}). Free space on the disk "
                   f"that holds it (`df -h {Path(path).parent}` shows how much is left)"
                   f"{elsewhere}. Nothing half-written was kept, and finished work stays "
                   "cached: rerun once there is room.")
    else:
        message = (f"cannot write {path}: permission denied or read-only file system ({err}). "
                   f"Make the folder writable for this user{elsewhere}.")
    return StorageError(message, code)


@contextmanager
def writing_to(path: str | os.PathLike, *,
               setting: str | None = "FTGEO_ARTIFACTS") -> Iterator[None]:
    """Turn a write failure for lack of permission or of space inside the block into a
    :class:`StorageError` naming ``path`` (other errors pass unchanged). The block itself
    removes its temporary files on failure.

    >>> with writing_to("/cache/entry"):
    ...     raise PermissionError(errno.EACCES, "Permission denied")
    Traceback (most recent call last):
    ...
    ftgeo._util.StorageError: cannot write /cache/entry: permission denied or read-only ...
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        translated = storage_error(err, path, setting=setting)
        if translated is None:
            raise
        raise translated from err


def repo_root() -> Path | None:
    """The source checkout that holds this package (``lib/ftgeo``), if it is one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def artifacts_dir() -> Path:
    """Where generated things go: ``FTGEO_ARTIFACTS`` if set, else ``<checkout>/artifacts``."""
    env = os.environ.get("FTGEO_ARTIFACTS")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "artifacts"
