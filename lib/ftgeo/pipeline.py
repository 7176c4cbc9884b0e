"""The batch runner: execute the notebooks a config lists with papermill.

``python -m ftgeo run --config configs/default.yaml [--model NAME] [--tasks a,b]``

Each (notebook, parameters) pair runs into its own folder under ``<artifacts>/runs/``,
named for the notebook, the model and a hash of the parameters; beside the executed
notebook sit ``params.json``, the ``metrics.json`` the notebook writes, its figures and
``fingerprint.json``. A run whose parameters and inputs (notebook source, library source,
model weights, data files) are unchanged is skipped. The default run is also copied into
``book/``, with the injected-parameters cell hidden.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from ._util import (
    StorageError,
    artifacts_dir,
    atomic_write_json,
    atomic_write_text,
    canonical_json,
    check_count,
    progress_bar,
    repo_root,
    sha256_file,
    sha256_text,
    writing_to,
)

log = logging.getLogger(__name__)

CONFIG_KEYS = {"name", "model", "models", "book", "parameters", "notebooks", "notebook_dir", "device",
               "finetune_workers", "chapter_workers"}
KERNEL = "python3"
HIDE_TAG = "remove-cell"


class PipelineError(RuntimeError):
    """A run failed, or could not start; the message says where and what to do."""


@dataclass(frozen=True)
class Run:
    """One notebook with its parameters and the folder it runs into."""

    notebook: Path
    parameters: Mapping[str, Any]
    folder: Path
    book: bool

    @property
    def name(self) -> str:
        return self.notebook.stem

    @property
    def output(self) -> Path:
        return self.folder / self.notebook.name


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a run config (YAML); errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {str(path)!r} not found; see configs/default.yaml")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping with keys {sorted(CONFIG_KEYS)}")
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}")
    if not config.get("notebooks"):
        raise ValueError(f"{path}: 'notebooks' must list at least one notebook")
    if not isinstance(config.get("parameters", {}), dict):
        raise ValueError(f"{path}: 'parameters' must be a mapping")
    if "models" in config:
        if "model" in config:
            raise ValueError(f"{path}: give either 'model' or 'models', not both")
        models = config["models"]
        if not isinstance(models, list) or not models:
            raise ValueError(f"{path}: 'models' must be a non-empty list of model ids, or of "
                             "mappings {model: ID, parameters: {...}}")
        for i, item in enumerate(models):
            if not (isinstance(item, str) or (isinstance(item, dict) and isinstance(
                    item.get("model"), str) and set(item) <= {"model", "parameters"}
                    and isinstance(item.get("parameters", {}), dict))):
                raise ValueError(f"{path}: models[{i}] must be a model id or a mapping "
                                 f"{{model: ID, parameters: {{...}}}}, got {item!r}")
    config.setdefault("name", path.stem)
    config.setdefault("model", "minilm")
    config.setdefault("book", False)
    config.setdefault("parameters", {})
    config["_dir"] = str(path.resolve().parent)
    return config


def _notebook_dir(config: Mapping[str, Any]) -> Path:
    """``notebook_dir`` of the config (relative to the config file), else ``notebooks/``."""
    if config.get("notebook_dir"):
        return Path(config["_dir"]) / config["notebook_dir"]
    root = repo_root() or Path(config["_dir"]).parent
    return root / "notebooks"


def _slug(text: str) -> str:
    """A folder-safe name.

    >>> _slug("prajjwal1/bert-tiny"), _slug("/tmp/my model/")
    ('prajjwal1-bert-tiny', 'tmp-my-model')
    """
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.") or "model"


def plan(config: Mapping[str, Any], *, model: str | None = None, tasks: Sequence[str] | None = None,
         book: bool | None = None, runs_dir: Path | None = None,
         parameters: Mapping[str, Any] | None = None, device: Any = "cpu") -> list[Run]:
    """The runs a config asks for, with ``--model`` / ``--tasks`` / ``-p`` overrides applied.

    device : where the runs compute; off the CPU the run folders' names change too (a GPU's
        results differ in the last bits, and the CPU's runs stay where they are).

    Every parameter must be declared by a listed notebook, with the type of its default:
    otherwise ValueError names it, before anything runs.
    """
    from .data import task_name

    runs_dir = runs_dir or artifacts_dir() / "runs"
    base = {**config.get("parameters", {}), **(parameters or {})}
    if model is not None:
        models = [(str(model), {})]
    elif config.get("models"):
        models = [(m, {}) if isinstance(m, str) else (m["model"], dict(m.get("parameters", {})))
                  for m in config["models"]]
    else:
        models = [(str(config["model"]), {})]
    if tasks is not None:
        base["tasks"] = [task_name(t) for t in tasks]
    elif "tasks" in base:
        if not isinstance(base["tasks"], (list, tuple)):
            raise ValueError(f"config {config['name']!r}: parameters: parameter 'tasks' is "
                             f"{base['tasks']!r}, but the notebooks expect a list, e.g. [pos, dep]")
        base["tasks"] = [task_name(t) for t in base["tasks"]]
    # The book shows the default run; an override makes a different run.
    to_book = bool(config.get("book")) if book is None else book
    if book is None and (model is not None or tasks is not None):
        to_book = False
    listed = []
    for item in config["notebooks"]:
        name, params = ((item, {}) if isinstance(item, str)
                        else (item.get("name"), item.get("parameters", {})))
        nb = _notebook_dir(config) / f"{name}.ipynb"
        if not nb.is_file():
            raise FileNotFoundError(f"config {config['name']!r} lists notebook {name!r}, "
                                    f"but {nb} does not exist")
        listed.append((nb, dict(params)))
    declared = {nb: notebook_parameters(nb) for nb, _ in listed}
    where = f"config {config['name']!r}"
    check_parameters(base, declared, f"{where}: parameters")
    for model_id, model_params in models:
        check_parameters(model_params, declared, f"{where}: parameters of model {model_id!r}")
    for nb, params in listed:
        check_parameters(params, {nb: declared[nb]}, f"{where}: parameters of notebook {nb.stem!r}")
    import torch

    kind = torch.device(device).type
    runs = []
    for model_id, model_params in models:
        for nb, params in listed:
            given = {**base, **model_params, **params, "model": model_id}
            # each notebook gets the parameters it declares, so that a parameter it does not
            # read neither reaches papermill nor changes its run folder
            parameters = {k: v for k, v in given.items() if k in declared[nb] or k == "model"}
            digest = sha256_text(canonical_json(
                parameters if kind == "cpu" else {**parameters, "device": kind}))[:8]
            model_slug = _slug(Path(model_id).name or model_id)
            folder = runs_dir / f"{nb.stem}--{model_slug}--{digest}"
            parameters["output_dir"] = str(folder)
            runs.append(Run(nb, parameters, folder, to_book and len(models) == 1))
    # notebooks that read other runs (the comparison, the scorecard) go after every model's
    # chapters, so that one invocation leaves them up to date
    return sorted(runs, key=lambda r: reads_runs(r.notebook))


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """The parameters a notebook declares in its ``parameters`` cell: ``{name: default}``
    (the default as a Python value; ``...`` where it is not a literal). Read once per version
    of the file: planning and the fine-tuning stage both ask for every notebook."""
    path = Path(notebook).resolve()
    return dict(_notebook_parameters(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _notebook_parameters(path: str, mtime_ns: int) -> dict[str, Any]:
    import papermill as pm

    out = {}
    for name, info in pm.inspect_notebook(path).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = ...
    return out


def _type_name(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type a parameter's default has (None or a non-literal
    default takes anything; a float takes an integer; None is accepted where the default is
    a value, meaning "the notebook's choice").

    >>> _fits([1, 2], ["a"]), _fits("pos", ["a"]), _fits(3, 0.5), _fits(0.5, 3), _fits(None, 3)
    (True, False, True, False, True)
    """
    if default is None or default is ... or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _check_finetune(value: Any) -> None:
    from .finetune import ChapterFinetuning

    if isinstance(value, Mapping):  # another type is refused below, against the default's
        ChapterFinetuning.from_mapping(value)


def _check_grid_search(value: Any) -> None:
    from .probes import check_grid_search

    check_grid_search(value)


def _check_probe_autocast(value: Any) -> None:
    from .probes import check_probe_autocast

    check_probe_autocast(value, "probe_autocast")


#: Parameters whose value is checked beyond its type before anything runs: name -> a function
#: that raises ValueError (or TypeError) naming what is wrong.
_VALUE_CHECKS: dict[str, Callable[[Any], None]] = {
    "finetune": _check_finetune,
    "grid_search": _check_grid_search,
    "probe_autocast": _check_probe_autocast,
}


def check_parameters(given: Mapping[str, Any], declared: Mapping[Path, Mapping[str, Any]],
                     where: str) -> None:
    """ValueError, before anything runs, for a parameter that none of the notebooks declares
    (naming it and the notebooks) or one whose value does not have the declared default's type."""
    for name, value in given.items():
        if name in ("model", "output_dir"):
            continue
        holders = {nb.stem: d[name] for nb, d in declared.items() if name in d}
        if not holders:
            raise ValueError(
                f"{where}: unknown parameter {name!r}: none of the notebooks "
                f"{', '.join(nb.stem for nb in declared)} declares it. Check its spelling against "
                "the parameters cell of each notebook (the first code cell).")
        checker = _VALUE_CHECKS.get(name)
        if checker is not None:
            try:
                checker(value)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: {err}") from None
        for notebook, default in holders.items():
            if not _fits(value, default):
                raise ValueError(
                    f"{where}: parameter {name!r} is {value!r}, but notebook {notebook!r} expects "
                    f"{_type_name(default)} (its default is {default!r})")


def _library_digest() -> str:
    pkg = Path(__file__).resolve().parent
    return sha256_text(canonical_json({p.name: sha256_file(p) for p in sorted(pkg.glob("*.py"))}))


def fingerprint(run: Run) -> dict[str, Any]:
    """Everything a run's result depends on; equal fingerprints mean nothing to redo."""
    from ._util import resolve_device
    from .data import FILES, data_file, task_name
    from .models import model_fingerprint

    datasets = {"pos": ["ud-english-pud"], "dep": ["ud-english-pud"], "ps-role": ["streusle"],
                "ps-fxn": ["streusle"], "trec-50": ["trec"], "sst-2": ["sst2"], "mrpc": ["mrpc"]}
    needed = {d for t in run.parameters.get("tasks", []) for d in datasets[task_name(t)]}
    data = {key: sha256_file(data_file(f.dataset, f.name)) for key, f in FILES.items()
            if f.dataset in needed}
    fp = {"notebook": sha256_file(run.notebook), "library": _library_digest(),
          "parameters": dict(run.parameters), "model": model_fingerprint(run.parameters["model"]),
          "data": data}
    device = resolve_device().type
    if device != "cpu":  # a GPU's results differ slightly; the CPU's fingerprints stay as they were
        fp["device"] = device
    if reads_runs(run.notebook):
        fp["runs"] = _runs_digest(run)
    return fp


def reads_runs(notebook: Path) -> bool:
    """True for a notebook that reads other runs' ``metrics.json`` (the scorecard, the model
    comparison): its metadata has ``"ftgeo": {"reads_runs": true}``."""
    meta = nbformat.read(notebook, as_version=4).metadata.get("ftgeo", {})
    return bool(meta.get("reads_runs"))


def _runs_digest(run: Run) -> dict[str, str]:
    """sha256 of the ``metrics.json`` of every run in the runs folder this run reads, so
    that a new or changed chapter run makes a reading notebook run again. Runs of reading
    notebooks (their fingerprint has "runs") are left out: otherwise two readers would
    make each other stale forever."""
    runs_dir = Path(run.parameters.get("runs_dir") or run.folder.parent)
    digest = {}
    for path in sorted(runs_dir.glob("*/metrics.json")):
        fp_file = path.parent / "fingerprint.json"
        try:
            is_reader = fp_file.is_file() and "runs" in json.loads(fp_file.read_text("utf-8"))
        except ValueError:
            is_reader = False
        if path.parent != run.folder and not is_reader:
            digest[path.parent.name] = sha256_file(path)
    return digest


def _is_current(run: Run, fp: Mapping[str, Any]) -> bool:
    fp_file = run.folder / "fingerprint.json"
    if not (fp_file.is_file() and run.output.is_file() and (run.folder / "metrics.json").is_file()):
        return False
    try:
        return json.loads(fp_file.read_text(encoding="utf-8")) == json.loads(canonical_json(fp))
    except ValueError:
        return False


@contextmanager
def watching_status(path: Path, show, every_s: float = 2.0) -> Iterator[None]:
    """While the block runs, point FTGEO_STATUS at ``path`` (the notebook's kernel inherits
    it, and the library's long loops report into it) and call ``show(line)`` with each new
    line that appears there."""
    import threading

    from ._util import STATUS_ENV

    stop = threading.Event()

    def watch() -> None:
        seen = None
        while not stop.wait(every_s):
            try:
                line = path.read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if line and line != seen:
                seen = line
                show(line)

    thread = threading.Thread(target=watch, daemon=True)
    with _environ(STATUS_ENV, str(path)):
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            path.unlink(missing_ok=True)


def execute(run: Run, show=None) -> None:
    """Execute one run with papermill; raise PipelineError naming the failing cell.

    ``show(line)``, if given, receives what the notebook's kernel is doing (its library
    loops' progress: fine-tuning step and loss, DirectProbe fits, extraction batches)."""
    import papermill as pm

    with writing_to(run.folder):
        run.folder.mkdir(parents=True, exist_ok=True)
    (run.folder / "metrics.json").unlink(missing_ok=True)
    # papermill writes the notebook as it executes into a hidden file, renamed when done: a
    # run killed half-way leaves only this file, which no later run takes for a finished one
    partial = run.folder / f".{run.notebook.stem}.running.ipynb"
    env_before = {k: os.environ.get(k) for k in ("FTGEO_PROGRESS", "TRANSFORMERS_VERBOSITY")}
    os.environ["FTGEO_PROGRESS"] = "0"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    try:
        status = run.folder / ".status"
        with writing_to(partial), watching_status(status, show or (lambda line: None)):
            pm.execute_notebook(str(run.notebook), str(partial), parameters=dict(run.parameters),
                                kernel_name=KERNEL, progress_bar=False, cwd=str(Path.cwd()))
    except StorageError:
        partial.unlink(missing_ok=True)
        raise
    except pm.PapermillExecutionError as err:
        failed = run.folder / f"{run.notebook.stem}.failed.ipynb"
        os.replace(partial, failed)
        raise PipelineError(
            f"notebook {run.notebook.name} failed in cell {err.cell_index} (execution count "
            f"{err.exec_count}): {err.ename}: {err.evalue}. The partly executed notebook is "
            f"{failed}") from err
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nb = nbformat.read(partial, as_version=4)
    hide_injected_parameters(nb)
    add_parameter_table(nb, run.notebook, run.parameters)
    text = nbformat.writes(nb)
    atomic_write_text(run.output, text if text.endswith("\n") else text + "\n")
    partial.unlink()


def hide_injected_parameters(nb: nbformat.NotebookNode) -> None:
    """Tag papermill's injected-parameters cell so that the book does not show it."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and HIDE_TAG not in tags:
            tags.append(HIDE_TAG)


PARAMETER_TABLE_TAG = "ftgeo-parameter-table"


def parameter_table(notebook: Path, parameters: Mapping[str, Any]) -> str:
    """A Markdown table of a notebook's parameters: the value this run used, the notebook's
    default and the meaning (the parameter's comment). ``output_dir`` is left out."""
    import papermill as pm

    def cell(text: str) -> str:
        return f"`{text}`".replace("|", "\\|") if text else ""

    def literal(text: str) -> str:  # the default as Python writes it, to match the value used
        try:
            return repr(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            return text

    lines = ["| parameter | this run | default | meaning |", "|---|---|---|---|"]
    for name, info in pm.inspect_notebook(str(notebook)).items():
        if name == "output_dir":
            continue
        default = literal(info["default"])
        used = repr(parameters[name]) if name in parameters else default
        lines.append(f"| `{name}` | {cell(used)} | {cell(default)} | "
                     f"{info['help'].replace('|', '/')} |")
    return "\n".join(lines)


def add_parameter_table(nb: nbformat.NotebookNode, notebook: Path,
                        parameters: Mapping[str, Any]) -> None:
    """Put a visible table of the run's parameters in place of the parameters cell, whose
    code the book then hides (its defaults and comments are in the table)."""
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            table = nbformat.v4.new_markdown_cell(
                "The parameters of this run (rerun with other values: `python -m ftgeo run "
                "--config CONFIG`, or papermill `-p NAME VALUE`):\n\n"
                + parameter_table(notebook, parameters))
            table.metadata["tags"] = [PARAMETER_TABLE_TAG]
            cell.metadata["tags"].append(HIDE_TAG)
            nb.cells.insert(i + 1, table)
            return


def run_config(config_path: str | os.PathLike, *, model: str | None = None,
               tasks: Sequence[str] | None = None, force: bool = False, book: bool | None = None,
               runs_dir: Path | None = None, book_dir: Path | None = None,
               parameters: Mapping[str, Any] | None = None, device: str | None = None,
               executor: str = "local", slurm: Any = None, wait: bool = True,
               finetune_workers: int | None = None,
               chapter_workers: int | None = None) -> dict[str, Any]:
    """Run every notebook a config lists; returns a summary (executed, skipped, forward passes).

    executor : ``local`` (this process: the fine-tuning stage, then the notebooks in turn) or
        ``slurm`` (:mod:`ftgeo.cluster`: the same work as Slurm jobs, with ``slurm`` a
        :class:`ftgeo.cluster.SlurmOptions`; ``wait=False`` returns once they are submitted,
        and the summary is then ``{"folder", "jobs", "states"}`` of the job plan).

    finetune_workers : fine-tuning runs trained side by side by the local executor
        (:func:`prepare_finetuning`); default the config's ``finetune_workers``, else 1.
    chapter_workers : notebooks executed side by side by the local executor, each kernel on
        an equal share of the cores (:func:`execute_side_by_side`); the notebooks that read
        other runs (the scorecard, the model comparison) run after them, one at a time.
        Default the config's ``chapter_workers``, else 1.

    device : where models run (``auto``, ``cpu``, ``cuda``, ``cuda:N``); default the config's
        ``device``, else ``FTGEO_DEVICE``, else auto. It holds for the fine-tuning stage and
        every notebook (through ``FTGEO_DEVICE``); a GPU's results are cached apart from the
        CPU's (:func:`ftgeo.models.load_model`).

    Pipelines may run side by side on one artifacts directory: each notebook run and each
    fine-tuning run has its own lock, so a run that another process is computing is waited
    for and then reused, never computed twice.
    """
    from ._util import DEVICE_ENV, resolve_device

    if executor not in ("local", "slurm"):
        raise ValueError(f"--executor: {executor!r} is not one of local, slurm")
    config = load_config(config_path)
    chosen = device if device is not None else config.get("device")
    where = "--device" if device is not None else f"{config_path}: device" if chosen is not None else ""
    workers = _workers(finetune_workers, config, "finetune_workers", config_path)
    side_by_side = _workers(chapter_workers, config, "chapter_workers", config_path)
    if executor == "slurm":
        if finetune_workers is not None or chapter_workers is not None:
            log.warning("--finetune-workers and --chapter-workers are for the local executor; on "
                        "Slurm every fine-tuning run and every model's chapters are jobs of their "
                        "own (--cpus-per-job sets their cores)")
        return _run_on_slurm(config, chosen, where, model=model, tasks=tasks, force=force,
                             book=book, runs_dir=runs_dir, book_dir=book_dir,
                             parameters=parameters, slurm=slurm, wait=wait)
    try:
        target = resolve_device(chosen)
    except ValueError as err:
        raise ValueError(f"{where + ': ' if where else ''}{err}") from None
    runs = plan(config, model=model, tasks=tasks, book=book, runs_dir=runs_dir,
                parameters=parameters, device=target)
    book_dir = book_dir or (repo_root() or Path.cwd()) / "book"
    log.info("device: %s", target)
    if target.type != "cpu" and workers > 1:
        log.info("fine-tuning one run at a time on %s (finetune_workers is for CPU cores)", target)
        workers = 1
    if target.type != "cpu" and side_by_side > 1:
        log.info("executing one notebook at a time on %s (chapter_workers is for CPU cores: "
                 "kernels side by side would share the device's memory)", target)
        side_by_side = 1
    with _environ(DEVICE_ENV, str(target)):
        return _run_all(runs, force=force, book_dir=book_dir, workers=workers,
                        chapter_workers=side_by_side)


def _workers(given: int | None, config: Mapping[str, Any], key: str, config_path: Any) -> int:
    """A worker count from the command line (``given``), else the config's ``key``, else 1."""
    value = given if given is not None else config.get(key, 1)
    where = f"--{key.replace('_', '-')}" if given is not None else config_path
    return check_count(value, f"{where}: {key}")


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Set the environment variable ``name`` while the block runs (notebook kernels and
    library calls inherit it), then restore what it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _run_on_slurm(config: Mapping[str, Any], chosen: Any, where: str, *, slurm: Any, wait: bool,
                  book_dir: Path | None, force: bool, **plan_args: Any) -> dict[str, Any]:
    """run_config's Slurm executor: the jobs' device is decided for the compute nodes, which
    may have GPUs that this (login) machine lacks."""
    import torch

    from ._util import DEVICE_ENV, resolve_device
    from .cluster import SlurmOptions, check_slurm, run_on_slurm

    check_slurm()
    options = slurm or SlurmOptions()
    name = str(chosen if chosen is not None else os.environ.get(DEVICE_ENV) or "auto").lower()
    kind = ("cuda" if options.gpus_per_job else "cpu") if name == "auto" else name.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"{where or 'device'}: {name!r} is not one of auto, cpu, cuda, cuda:N")
    if kind == "cuda" and not options.gpus_per_job:
        raise ValueError(f"{where or 'device'}: {name!r} asks for a GPU, but the jobs ask Slurm "
                         "for none: add --gpus-per-job 1")
    # this machine can compute the jobs' cache keys only where it has their kind of device
    local = kind == "cpu" or torch.cuda.is_available()
    # the jobs get the device kind: a job sees the GPUs Slurm gave it, numbered from 0, so a
    # device index of this machine's would name a GPU the job does not have
    with _environ(DEVICE_ENV, str(resolve_device(kind)) if local else "cpu"):
        runs = plan(config, device=kind, **plan_args)
        book_dir = book_dir or (repo_root() or Path.cwd()) / "book"
        return run_on_slurm(runs, config_name=str(config["name"]), options=options,
                            force=force, book_dir=book_dir, wait=wait,
                            device=kind, check_cache=local)


#: Notebook parameters that name the tasks whose fine-tuned runs a chapter reads.
TASK_PARAMETERS = ("tasks", "glue_tasks", "sources", "target")


def finetuning_needed(notebook: Path, parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a chapter reads of fine-tuning, as :func:`ftgeo.finetune.chapter_runs`' arguments
    (``model``, ``tasks``, ``seed``, ``finetune``, ``max_sentences``); None for a notebook
    that declares no ``finetune`` parameter (it reads no fine-tuned run)."""
    from .data import task_name

    declared = notebook_parameters(notebook)
    if "finetune" not in declared:
        return None
    p = {**declared, **parameters}
    tasks: list[str] = []
    for name in TASK_PARAMETERS:
        value = p.get(name)
        if value is None or value is ...:
            continue
        tasks += [value] if isinstance(value, str) else list(value)
    return {"model": p["model"], "tasks": list(dict.fromkeys(task_name(t) for t in tasks)),
            "seed": p.get("seed", 0), "finetune": p.get("finetune") or {},
            "max_sentences": p.get("max_sentences", 0)}


def prepare_finetuning(work: Sequence[tuple[Path, Mapping[str, Any]]], *, workers: int = 1) -> int:
    """The pipeline's fine-tuning stage: train every run that the chapters in ``work``
    (notebook, parameters) read, before any of them runs. Finished runs are cache hits.

    workers : fine-tuning runs trained side by side, each in its own process with an equal
        share of this machine's cores as torch threads (1: one run at a time, in this
        process, on every core). Small models on short sequences use two cores poorly: on
        this 2-core machine the default book's 21 runs, two at a time on one thread each,
        trained about 1.5 times as many runs an hour as one at a time on two threads. Runs
        go seed by seed, the longest task first (:func:`_train_side_by_side`). A run's last
        bits may differ with its thread count; its cache key does not.

    Returns the number of (model, settings) groups prepared.
    """
    from .finetune import chapter_runs

    workers = check_count(workers, "finetune_workers")
    needed: dict[str, dict[str, Any]] = {}
    for notebook, parameters in work:
        spec = finetuning_needed(notebook, parameters)
        if spec is not None and spec["tasks"]:
            key = canonical_json({k: v for k, v in spec.items() if k != "tasks"})
            if key in needed:
                needed[key]["tasks"] = list(dict.fromkeys(needed[key]["tasks"] + spec["tasks"]))
            else:
                needed[key] = spec
    for spec in needed.values():
        log.info("fine-tuning stage: %s on %s (finetune=%s, max_sentences=%s)", spec["model"],
                 ", ".join(spec["tasks"]), spec["finetune"] or "defaults", spec["max_sentences"])
        if workers > 1:
            _train_side_by_side(spec, int(workers))
        chapter_runs(spec["model"], spec["tasks"], seed=spec["seed"], finetune=spec["finetune"],
                     max_sentences=spec["max_sentences"], train=True)
    return len(needed)


def _train_side_by_side(spec: Mapping[str, Any], workers: int) -> None:
    """Train the unfinished runs of one fine-tuning group in ``workers`` processes.

    At most ``workers`` runs are handed out at a time, so that a failure, or Ctrl-C, ends
    the stage at once: the other workers are stopped (an interrupted run resumes from its
    checkpoint next time) and the error names the run that failed.
    """
    import torch

    from .finetune import GLUE_TASKS, ChapterFinetuning, chapter_seed_runs, unfinished_seed_runs
    from .models import load_model

    loaded = load_model(spec["model"])
    common = {"seed": spec["seed"], "finetune": spec["finetune"],
              "max_sentences": spec["max_sentences"]}
    missing = unfinished_seed_runs(loaded, spec["tasks"], **common)
    if len(missing) < 2:
        return  # nothing to share: the caller trains it in this process, on every core
    _, data, _ = chapter_seed_runs(loaded, spec["tasks"], seeds=[], **common)
    del loaded
    plan = ChapterFinetuning.from_mapping(spec["finetune"])

    def cost(task: str) -> int:  # words seen in training, a proxy of the run's compute
        train = data[task]["train"]
        epochs = plan.glue_epochs if train.task in GLUE_TASKS else plan.settings.epochs
        return epochs * sum(len(s) for s in [*train.sentences, *(train.second or [])])

    # seed by seed, the longest task first: runs side by side are of different tasks, so
    # they do not both compute the pretrained model's vectors of one task
    seeds = plan.seeds
    pending = sorted(missing, key=lambda run: (seeds.index(run[1]), -cost(run[0])))
    workers = min(workers, len(pending))
    threads = max(1, torch.get_num_threads() // workers)
    log.info("fine-tuning %d runs, %d side by side with %d torch thread(s) each: %s", len(pending),
             workers, threads, ", ".join(f"{task} seed {s}" for task, s in pending))
    bar = progress_bar(desc="fine-tuning runs", unit="run", total=len(pending))
    finished: list[tuple[str, int]] = []
    total = len(pending)

    def done(run: tuple[str, int], future) -> None:
        task, s = run
        try:
            future.result()
        except Exception as err:
            raise PipelineError(
                f"fine-tuning {spec['model']} on {task} (seed {s}) failed in its worker "
                f"process: {type(err).__name__}: {err}") from err
        finished.append(run)
        log.info("fine-tuned %s seed %d (%d of %d runs)", task, s, len(finished), total)
        bar.update()

    # a stopped worker's run resumes from its checkpoint next time, and its lock dies with it
    try:
        _in_workers(pending, workers, lambda run: (_train_one, spec["model"], *run, common), done,
                    initializer=_start_worker,
                    initargs=(threads, logging.getLogger("ftgeo").getEffectiveLevel()))
    finally:
        bar.close()


def _in_workers(items: Sequence[Any], workers: int, call: Callable[[Any], tuple], done: Callable,
                *, initializer: Callable, initargs: tuple) -> None:
    """Hand ``items`` out in order to ``workers`` spawned processes, at most ``workers`` at a
    time: ``call(item)`` gives the function and arguments a worker runs; ``done(item,
    future)`` is called as each one finishes and reads its result. An exception from
    ``done`` (a failed item), or Ctrl-C, stops the other workers at once instead of waiting
    for what they run, and is raised.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # a fork of a process with torch threads hangs
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=initializer,
                               initargs=initargs)
    pending, running = list(items), {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                item = pending.pop(0)
                fn, *args = call(item)
                running[pool.submit(fn, *args)] = item
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done(running.pop(future), future)
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown()


def _start_worker(threads: int, level: int) -> None:
    """A fine-tuning worker: its share of the cores, no progress bars (the stage shows one
    over runs), and the library's log lines marked with its process id."""
    import torch

    from ._util import set_progress

    torch.set_num_threads(threads)
    set_progress(False)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"ftgeo[{os.getpid()}]: %(message)s"))
    logger = logging.getLogger("ftgeo")
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _train_one(model: str, task: str, seed: int, common: Mapping[str, Any]) -> None:
    from .finetune import chapter_seed_runs

    chapter_seed_runs(model, [task], seeds=[seed], train=True, **common)


def _run_all(runs: Sequence[Run], *, force: bool, book_dir: Path, workers: int = 1,
             chapter_workers: int = 1) -> dict[str, Any]:
    summary = {"executed": [], "skipped": [], "forward_batches": 0, "runs": [], "timings": []}
    # the fine-tuning stage: every run the chapters to execute read is trained first (readers
    # of other runs are fingerprinted when their turn comes: the runs they read change first)
    chapters = {id(run): fingerprint(run) for run in runs if not reads_runs(run.notebook)}
    to_execute = [run for run in runs if id(run) in chapters
                  and (force or not _is_current(run, chapters[id(run)]))]
    prepare_finetuning([(run.notebook, run.parameters) for run in to_execute], workers=workers)
    bar = progress_bar(desc="notebooks", unit="notebook", total=len(runs))
    outcomes: dict[int, dict[str, Any]] = {}
    started = time.time()
    try:
        if chapter_workers > 1 and len(to_execute) > 1:
            outcomes = execute_side_by_side(to_execute, chapter_workers, force=force,
                                            book_dir=book_dir, fingerprints=chapters, bar=bar)
        for run in runs:  # the rest in turn; the readers last (plan() puts them there)
            if id(run) not in outcomes:
                outcomes[id(run)] = run_one(run, force=force, book_dir=book_dir,
                                            fp=chapters.get(id(run)), show=_shower(bar, run.name))
                bar.update()
    finally:
        bar.close()
    summary["notebooks_wall_s"] = time.time() - started
    for run in runs:
        outcome = outcomes[id(run)]
        summary["executed" if outcome["executed"] else "skipped"].append(run.name)
        summary["forward_batches"] += outcome["forward_batches"]
        summary["runs"].append(str(run.folder))
        summary["timings"].append(outcome["timing"])
    if any(run.book for run in runs):
        write_execution_page(book_dir / EXECUTION_PAGE, summary["timings"],
                             wall_s=summary["notebooks_wall_s"])
    log.info("%d notebook(s): %d executed, %d unchanged and skipped; forward passes in this run: "
             "%d batches%s", len(runs), len(summary["executed"]), len(summary["skipped"]),
             summary["forward_batches"],
             " (every representation came from the cache)" if summary["forward_batches"] == 0 else "")
    return summary


def execute_side_by_side(runs: Sequence[Run], workers: int, *, force: bool, book_dir: Path,
                         fingerprints: Mapping[int, Mapping[str, Any]], bar=None
                         ) -> dict[int, dict[str, Any]]:
    """:func:`run_one` for each of ``runs``, ``workers`` at a time, each in its own process
    whose notebook kernel gets an equal share of torch's threads (``OMP_NUM_THREADS`` and
    its kin). Returns ``{id(run): outcome}``.

    For notebooks that read no other run (chapters 1 to 9): they only share the caches,
    whose entries are written atomically under locks. On a 2-core CPU much of a chapter is
    single-threaded (DirectProbe's linear programs, Python loops) or gains little from a
    second thread on small matrices, so two chapters of one thread each use the cores better
    than one of two. Runs are handed out in the given order, at most ``workers`` at a time:
    a failure, or Ctrl-C, stops the other workers at once (their partly executed notebooks
    are left under a hidden name that no later run takes for a finished one) and the error
    names the notebook and cell that failed. A worker's kernel status appears as log lines.
    """
    import torch

    workers = min(int(workers), len(runs))
    threads = max(1, torch.get_num_threads() // workers)
    log.info("executing %d notebooks, %d side by side with %d thread(s) each: %s", len(runs),
             workers, threads, ", ".join(run.name for run in runs))
    outcomes = {}

    def done(run: Run, future) -> None:
        try:
            outcomes[id(run)] = future.result()
        except (PipelineError, StorageError):
            raise  # they name the notebook and cell, or the file
        except Exception as err:  # a dead kernel or worker (out of memory, killed)
            raise PipelineError(
                f"notebook {run.notebook.name} failed in its worker process: "
                f"{type(err).__name__}: {err}. Its partly executed notebook is "
                f"{run.folder / f'.{run.notebook.stem}.running.ipynb'}") from err
        log.info("%s: done (%d of %d notebooks side by side)", run.name, len(outcomes), len(runs))
        if bar is not None:
            bar.update()

    # a stopped worker shuts its kernel down (_start_chapter_worker)
    _in_workers(runs, workers,
                lambda run: (_run_one_logged, run, force, book_dir, fingerprints.get(id(run))),
                done, initializer=_start_chapter_worker,
                initargs=(threads, logging.getLogger("ftgeo").getEffectiveLevel()))
    return outcomes


def _start_chapter_worker(threads: int, level: int) -> None:
    """A notebook worker: as a fine-tuning worker, and its kernels start with ``threads``
    threads (torch, OpenMP and the BLAS libraries read these variables when they load)."""
    import signal

    from ._util import set_thread_variables

    set_thread_variables(threads)
    _start_worker(threads, level)
    # stopped by the parent (another notebook failed, Ctrl-C): leave through papermill's
    # cleanup, which shuts the kernel down, rather than leave the kernel to notice alone
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def _run_one_logged(run: Run, force: bool, book_dir: Path,
                    fp: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`run_one` in a worker: the kernel's status goes to the log."""
    return run_one(run, force=force, book_dir=book_dir, fp=fp, show=_shower(None, run.name))


def run_one(run: Run, *, force: bool = False, book_dir: Path | None = None,
            fp: Mapping[str, Any] | None = None, show=None) -> dict[str, Any]:
    """Execute one run unless it is current (same fingerprint), under the run's own lock: a
    process that finds another executing it waits, then reuses its result. Copies a book run
    into ``book_dir``. Returns ``{"executed": bool, "forward_batches": int, "timing": row}``
    (the row of the execution page)."""
    from ._util import file_lock

    started = time.time()
    executed, batches = False, 0
    with file_lock(run.folder / ".lock", what=f"executes {run.name} there"):
        fp = fp if fp is not None else fingerprint(run)
        if not force and _is_current(run, fp):
            log.info("%s: unchanged since its last run, skipped (%s)", run.name, run.folder)
        else:
            log.info("%s: executing into %s", run.name, run.folder)
            execute(run, show=show)
            atomic_write_json(run.folder / "params.json", dict(run.parameters))
            atomic_write_json(run.folder / "fingerprint.json", json.loads(canonical_json(fp)))
            metrics = _read_metrics(run)
            batches = int(metrics.get("work", {}).get("forward_batches", 0))
            executed = True
        timing = _timing(run, started, reused=not executed)
        if run.book and book_dir is not None:
            target = Path(book_dir) / run.notebook.name
            atomic_write_text(target, run.output.read_text(encoding="utf-8"), setting=None)
    return {"executed": executed, "forward_batches": batches, "timing": timing}


def _shower(bar, name: str, log_every_s: float = 30.0):
    """Show a kernel's status line: beside the notebooks bar in a terminal, or as a log line at
    most every ``log_every_s`` seconds when progress bars are off (or ``bar`` is None)."""
    last = {"t": 0.0}

    def show(line: str) -> None:
        if bar is not None and not bar.disable:
            bar.set_postfix_str(f"{name}: {line}")
        elif time.monotonic() - last["t"] >= log_every_s:
            last["t"] = time.monotonic()
            log.info("%s: %s", name, line)

    return show


def _timing(run: Run, started: float, *, reused: bool) -> dict[str, Any]:
    """One row of the execution page: the notebook, when it ran, for how long, and whether
    this pipeline run reused it."""
    fp_file = run.folder / "fingerprint.json"
    ran_at = fp_file.stat().st_mtime if fp_file.is_file() else started
    seconds = None
    if not reused:
        seconds = time.time() - started
        with suppress(OSError):
            atomic_write_json(run.folder / "timing.json", {"seconds": seconds, "finished": time.time()})
    else:
        with suppress(OSError, ValueError):
            seconds = json.loads((run.folder / "timing.json").read_text("utf-8"))["seconds"]
    return {"notebook": run.name, "model": run.parameters.get("model"), "folder": run.folder.name,
            "ran_at": ran_at, "seconds": seconds, "reused": reused}


EXECUTION_PAGE = "execution.md"


def write_execution_page(path: Path, timings: Sequence[Mapping[str, Any]], *,
                         wall_s: float | None = None) -> None:
    """The book's execution page: each notebook's run time, when it ran, and whether the
    last pipeline run reused it from an earlier one (unchanged inputs); ``wall_s``, the
    notebooks stage's wall time (less than the sum of run times when notebooks ran side by
    side)."""
    lines = ["# Execution statistics", "",
             "How the notebooks of this book were executed, by `python -m ftgeo run` (papermill). A "
             "notebook whose inputs (source, library, parameters, model weights, data files) had not "
             "changed since its last run is reused, not executed again; its run time is the one "
             "measured when it last ran.", ""]
    if timings:
        lines += ["| notebook | model | last executed (UTC) | run time | this build |",
                  "|---|---|---|---|---|"]
        for t in timings:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t["ran_at"]))
            took = "" if t["seconds"] is None else f"{t['seconds'] / 60:.1f} min" if t["seconds"] >= 60 \
                else f"{t['seconds']:.0f} s"
            lines.append(f"| {t['notebook']} | `{t['model']}` | {when} | {took} | "
                         f"{'reused (unchanged)' if t['reused'] else 'executed'} |")
        total = sum(t["seconds"] or 0 for t in timings if not t["reused"])
        lines += ["", f"This build executed {sum(not t['reused'] for t in timings)} of {len(timings)} "
                      f"notebooks in {total / 60:.1f} minutes of run time"
                      + ("." if wall_s is None else
                         f", {wall_s / 60:.1f} minutes of wall time (notebooks side by side "
                         f"count once in wall time, each in run time).")]
    else:
        lines.append("No pipeline run has written this page yet: run `make book`.")
    atomic_write_text(path, "\n".join(lines) + "\n", setting=None)


def _read_metrics(run: Run) -> dict[str, Any]:
    path = run.folder / "metrics.json"
    if not path.is_file():
        raise PipelineError(f"notebook {run.notebook.name} ran but wrote no metrics.json into "
                            f"{run.folder}; it must call ftgeo.save_metrics(output_dir, ...)")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    from .results import RECORDS, SchemaError, parse_record

    if metrics.get("chapter") in RECORDS:
        try:
            parse_record(metrics, str(path))
        except SchemaError as err:
            raise PipelineError(f"notebook {run.notebook.name} wrote a record that does not fit its "
                                f"schema: {err}") from err
    return metrics


def save_metrics(output_dir: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """Write a notebook's ``metrics.json`` (with the process's extraction counters) atomically.

    NaN and infinite numbers become ``null``, so the file is strict JSON.
    """
    from .extract import COUNTERS

    path = Path(output_dir) / "metrics.json"
    atomic_write_json(path, _finite({**metrics, "work": dict(COUNTERS)}))
    return path


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (recursively).

    >>> _finite({"a": [1.0, float("nan")], "b": (float("inf"),)})
    {'a': [1.0, None], 'b': [None]}
    """
    import math

    import numpy as np

    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m ftgeo`` command line."""
    parser = argparse.ArgumentParser(prog="python -m ftgeo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks of a config with papermill")
    p_run.add_argument("--config", default="configs/default.yaml", help="run config (YAML)")
    p_run.add_argument("--model", help="alias, hub id or local folder (overrides the config)")
    p_run.add_argument("--tasks", help="comma-separated tasks (overrides the config)")
    p_run.add_argument("--force", action="store_true", help="re-execute unchanged runs too")
    p_run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="set a notebook parameter for every run (VALUE is read as YAML: 3, "
                            "[pos, dep], null); repeatable")
    p_run.add_argument("--book", action=argparse.BooleanOptionalAction, default=None,
                       help="copy the executed notebooks into book/ (default: the config's "
                            "'book', and no when --model or --tasks is given)")
    p_run.add_argument("--device", default=None,
                       help="auto (a GPU when there is one), cpu, cuda or cuda:N (default: the "
                            "config's 'device', else auto)")
    p_run.add_argument("--executor", choices=["local", "slurm"], default="local",
                       help="local (default: this process) or slurm (jobs through submitit: "
                            "fine-tuning runs as a job array, then each model's chapters, then "
                            "the readers)")
    p_run.add_argument("--finetune-workers", type=int, default=None, metavar="N",
                       help="local executor: fine-tuning runs trained side by side, each on an "
                            "equal share of the cores (default: the config's 'finetune_workers', "
                            "else 1)")
    p_run.add_argument("--chapter-workers", type=int, default=None, metavar="N",
                       help="local executor: notebooks executed side by side, each kernel on an "
                            "equal share of the cores; the scorecard and other readers of runs "
                            "follow them (default: the config's 'chapter_workers', else 1)")
    slurm = p_run.add_argument_group("Slurm executor (--executor slurm)")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--gpus-per-job", type=int, default=0, help="GPUs per job (default 0)")
    slurm.add_argument("--cpus-per-job", type=int, default=1, help="CPUs per job (default 1)")
    slurm.add_argument("--mem-gb", type=float, default=None, help="memory per job, GB")
    slurm.add_argument("--time-min", type=int, default=240,
                       help="time limit per job, minutes (a job at its limit is requeued and "
                            "resumes from its checkpoint, up to 3 times)")
    slurm.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="any other #SBATCH option, e.g. account=lab or qos=high; repeatable")
    slurm.add_argument("--retries", type=int, default=2,
                       help="resubmissions of a job that leaves the queue unfinished (default 2)")
    slurm.add_argument("--no-wait", action="store_true",
                       help="return once the jobs are submitted; follow them with "
                            "`python -m ftgeo status`")
    p_run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p_status = sub.add_parser("status", help="the state of each job of a Slurm submission")
    p_status.add_argument("--jobs", default=None,
                          help="the job folder (default: the latest under <artifacts>/jobs)")
    p_status.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p_ft = sub.add_parser("finetune", help="fine-tune a model on a task, with snapshots")
    p_ft.add_argument("--model", default="minilm", help="alias, hub id or local folder")
    p_ft.add_argument("--task", required=True, help="one of: " + ", ".join(_task_names()))
    p_ft.add_argument("--seed", type=int, default=0,
                      help="fine-tuning seed: head initialization, dropout, batch order")
    p_ft.add_argument("--split-seed", type=int, default=0,
                      help="seed of the data splits a data set does not fix (same as the "
                           "chapters' 'seed'; keep it when comparing fine-tuning seeds)")
    p_ft.add_argument("--epochs", type=int, default=None)
    p_ft.add_argument("--learning-rate", type=float, default=None)
    p_ft.add_argument("--batch-size", type=int, default=None)
    p_ft.add_argument("--weight-decay", type=float, default=None, help="AdamW's (default 0: Adam)")
    p_ft.add_argument("--max-grad-norm", type=float, default=None,
                      help="clip gradients to this norm (default: no clipping, as the paper)")
    p_ft.add_argument("--bf16", action="store_true",
                      help="bfloat16 autocast for training steps (faster on CPUs with AVX-512 BF16 "
                           "and on GPUs); the same as --autocast bf16")
    p_ft.add_argument("--autocast", choices=["bf16", "fp16"], default=None,
                      help="autocast for training steps: bf16, or fp16 (GPUs only)")
    p_ft.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p_ft.add_argument("--snapshots", type=int, default=None, help="snapshot count (with step 0)")
    p_ft.add_argument("--trajectory-items", type=int, default=0,
                      help="items of each probing set stored at every snapshot "
                           "(0, the default: all of them, as the chapters)")
    p_ft.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="ftgeo: %(message)s")
    for noisy in ("papermill", "traitlets", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from .cluster import ClusterError

    try:
        if args.command == "finetune":
            _finetune_command(args)
        elif args.command == "status":
            from .cluster import status_report

            print(status_report(args.jobs))
        else:
            run_config(args.config, model=args.model,
                       tasks=None if args.tasks is None else [t for t in args.tasks.split(",") if t],
                       force=args.force, book=args.book, device=args.device,
                       parameters={k: yaml.safe_load(v) for k, v in args.parameter},
                       executor=args.executor, slurm=_slurm_options(args),
                       wait=not args.no_wait, finetune_workers=args.finetune_workers,
                       chapter_workers=args.chapter_workers)
    except (PipelineError, StorageError, ValueError, FileNotFoundError, ClusterError) as err:
        print(f"ftgeo: error: {err}", file=sys.stderr)
        return 1
    return 0


def _slurm_options(args: argparse.Namespace):
    """The Slurm executor's options from the command line (ValueError for a malformed one)."""
    from .cluster import SlurmOptions

    extra = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-arg {item!r}: give KEY=VALUE, e.g. account=lab")
        extra[key.strip().lstrip("-")] = value.strip()
    options = SlurmOptions(partition=args.partition, gpus_per_job=args.gpus_per_job,
                           cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb,
                           time_min=args.time_min, extra=extra, retries=args.retries)
    options.validate()
    return options


def _task_names() -> list[str]:
    from .data import TASKS

    return list(TASKS)


def _finetune_command(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from ._util import set_progress
    from .data import load_task
    from .finetune import FinetuneSettings, finetune
    from .models import load_model

    set_progress(True)
    settings = FinetuneSettings(seed=args.seed)
    overrides = {"epochs": args.epochs, "learning_rate": args.learning_rate,
                 "batch_size": args.batch_size, "n_snapshots": args.snapshots,
                 "weight_decay": args.weight_decay, "max_grad_norm": args.max_grad_norm,
                 "autocast": args.autocast or ("bf16" if args.bf16 else None)}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings.validate()
    # the run's own lock (in finetune) keeps two processes from training it twice
    run = finetune(load_model(args.model, device=args.device),
                   load_task(args.task, seed=args.split_seed),
                   settings, trajectory_items=args.trajectory_items or None)
    log.info("fine-tuned %s on %s: %d steps; dev accuracy at the snapshots (steps %s): %s; "
             "weights and curve in %s", args.model, args.task, run.n_steps,
             run.steps.tolist(), [round(float(a), 4) for a in run.dev_accuracy], run.folder)
