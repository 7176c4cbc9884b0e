"""Run a config's work as Slurm jobs, through submitit.

``python -m ftgeo run --config C --executor slurm [--partition P --gpus-per-job N ...]``

The work of a config becomes three kinds of jobs, chained by Slurm dependencies:

- **fine-tuning**: one job per fine-tuning run (model x task x seed) that the chapters to
  execute read and the cache does not hold, in one job array per model;
- **chapters**: one job per notebook run of a model, in one array per model, which starts
  when that model's fine-tuning jobs have all succeeded;
- **readers** (the comparison, the scorecard): last, after every chapter job.

Jobs share the artifacts directory (a shared file system): the fine-tuning runs and notebook
runs lock themselves (:func:`ftgeo._util.file_lock`), so nothing is computed twice. Each job
records its state (running, done, failed, requeued), Slurm job id, host and restart count
in ``<artifacts>/jobs/<plan>/state/``; ``plan.json`` beside it lists the jobs and every Slurm
id each was given. A job that Slurm preempts (or that reaches its time limit) gets USR2 from
Slurm before the end; submitit then requeues it, and it resumes from its checkpoint (the
fine-tuning checkpoint; a notebook starts over). A job that disappears from the queue without
finishing (``scancel``, a node failure) is resubmitted by the waiting command, with its
dependents, up to ``retries`` times.

The waiting command shows progress over jobs; ``--no-wait`` returns once the jobs are
submitted, and ``python -m ftgeo status`` reports the state of each job of the latest plan.
Job states come from the state files and ``squeue``, so no Slurm accounting (``sacct``) is
needed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._util import artifacts_dir, atomic_write_json, canonical_json, progress_bar, slurm_job_id

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"
KINDS = ("finetune", "chapter", "reader")


class ClusterError(RuntimeError):
    """Slurm or submitit is missing, or jobs failed; the message says which and what to do."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for (``None``: the cluster's default)."""

    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    mem_gb: float | None = None
    time_min: int = 240
    #: extra ``#SBATCH`` options, e.g. ``{"account": "lab", "qos": "high"}``
    extra: Mapping[str, str] = field(default_factory=dict)
    #: how often the waiting command resubmits a job that left the queue unfinished
    retries: int = 2

    def validate(self) -> None:
        if self.gpus_per_job < 0 or self.cpus_per_job < 1 or self.time_min < 1 or self.retries < 0:
            raise ValueError(f"slurm options: gpus_per_job >= 0, cpus_per_job >= 1, time_min >= 1 "
                             f"and retries >= 0 are needed, got {self}")


@dataclass
class Job:
    """One unit of work: its kind, the jobs it runs after, what it does, its Slurm ids."""

    name: str
    kind: str
    group: str
    after: list[str]
    payload: dict[str, Any]
    ids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------

def _finetune_name(model: str, task: str, ft_seed: int, spec_key: str) -> str:
    from .pipeline import _slug

    return f"finetune--{_slug(Path(model).name or model)}--{task}--seed{ft_seed}--{spec_key}"


def plan_jobs(runs: Sequence, *, force: bool = False, book_dir: Path | None = None,
              env: Mapping[str, str] | None = None, check_cache: bool = True) -> list[Job]:
    """The jobs that bring ``runs`` (:func:`ftgeo.pipeline.plan`) up to date: fine-tuning runs
    the cache lacks, chapter runs that are not current (all with ``force``), and the readers
    when any chapter runs or when they are not current themselves. Without ``check_cache``
    (the jobs use a GPU that this machine lacks, so it cannot compute their cache keys) every
    run becomes a job, and a job whose run is finished is a cache hit there."""
    from ._util import sha256_text
    from .finetune import ChapterFinetuning, unfinished_seed_runs
    from .pipeline import _is_current, finetuning_needed, fingerprint, reads_runs

    def current(run) -> bool:
        return check_cache and not force and _is_current(run, fingerprint(run))

    env = dict(env or {})
    jobs: dict[str, Job] = {}
    chapter_jobs: list[str] = []
    unfinished: dict[str, list[tuple[str, int]]] = {}
    for run in runs:
        if reads_runs(run.notebook) or current(run):
            continue
        after = []
        spec = finetuning_needed(run.notebook, run.parameters)
        if spec is not None and spec["tasks"]:
            settings = {k: v for k, v in spec.items() if k != "tasks"}
            spec_key = sha256_text(canonical_json(settings))[:8]
            for task in spec["tasks"]:
                key = canonical_json({**settings, "task": task})
                if key not in unfinished:
                    unfinished[key] = unfinished_seed_runs(
                        spec["model"], [task], seed=spec["seed"], finetune=spec["finetune"],
                        max_sentences=spec["max_sentences"]) if check_cache else [
                        (task, s) for s in ChapterFinetuning.from_mapping(spec["finetune"]).seeds]
                for _, ft_seed in unfinished[key]:
                    name = _finetune_name(spec["model"], task, ft_seed, spec_key)
                    jobs.setdefault(name, Job(name, "finetune", f"finetune:{spec['model']}", [], {
                        **settings, "task": task, "ft_seed": ft_seed, "env": env}))
                    after.append(name)
        name = f"chapter--{run.folder.name}"
        jobs[name] = Job(name, "chapter", f"chapter:{run.parameters['model']}",
                         list(dict.fromkeys(after)), _run_payload(run, force, book_dir, env))
        chapter_jobs.append(name)
    for run in runs:
        if not reads_runs(run.notebook):
            continue
        if chapter_jobs or not current(run):
            name = f"reader--{run.folder.name}"
            jobs[name] = Job(name, "reader", "reader", list(chapter_jobs),
                             _run_payload(run, force, book_dir, env))
    return sorted(jobs.values(), key=lambda j: KINDS.index(j.kind))


def _run_payload(run, force: bool, book_dir: Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    return {"notebook": str(run.notebook), "parameters": dict(run.parameters),
            "folder": str(run.folder), "book": run.book, "force": force,
            "book_dir": None if book_dir is None else str(book_dir), "env": dict(env)}


# --------------------------------------------------------------------------------------
# What a job does (in the Slurm job's Python process)
# --------------------------------------------------------------------------------------

def _state_file(folder: Path, name: str) -> Path:
    return Path(folder) / "state" / f"{name}.json"


def _record(folder: Path, name: str, state: str, **extra: Any) -> None:
    atomic_write_json(_state_file(folder, name), {
        "state": state, **_job_record(), "pid": os.getpid(), "time": time.time(), **extra})


class Work:
    """The callable that submitit pickles into every job: runs one job of a plan and records
    its state; on preemption or time-out (USR2 from Slurm), :meth:`checkpoint` has submitit
    requeue the same call, which resumes from the run's own checkpoint."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = str(folder)

    def __call__(self, name: str, kind: str, payload: Mapping[str, Any]) -> Any:
        os.environ.update(payload.get("env", {}))
        os.environ["FTGEO_PROGRESS"] = "0"
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and cpus.isdigit():  # as many threads as the job has CPUs, not the node's
            import torch

            from ._util import set_thread_variables

            torch.set_num_threads(int(cpus))
            set_thread_variables(cpus)  # a notebook's kernel reads them when it starts
        _record(Path(self.folder), name, "running")
        try:
            result = run_job(kind, payload)
        except Exception as err:  # not SystemExit: submitit exits that way when it requeues
            _record(Path(self.folder), name, "failed", error=f"{type(err).__name__}: {err}")
            raise
        _record(Path(self.folder), name, "done", result=result)
        return result

    def checkpoint(self, name: str, kind: str, payload: Mapping[str, Any]):
        import submitit

        _record(Path(self.folder), name, "requeued")
        return submitit.helpers.DelayedSubmission(Work(self.folder), name, kind, payload)


def run_job(kind: str, payload: Mapping[str, Any]) -> Any:
    """Do one job's work in this process: train one fine-tuning run, or execute one notebook
    run (:func:`ftgeo.pipeline.run_one`). Returns what the state file records."""
    from ._util import set_progress

    set_progress(False)
    if kind == "finetune":
        from .finetune import chapter_seed_runs, unfinished_seed_runs
        from .models import load_model

        model = load_model(payload["model"])  # once, for the cache check and the training
        args = {"seed": payload["seed"], "finetune": payload["finetune"],
                "max_sentences": payload["max_sentences"]}
        trains = (payload["task"], payload["ft_seed"]) in unfinished_seed_runs(
            model, [payload["task"]], **args)
        _, _, runs = chapter_seed_runs(model, [payload["task"]], train=True,
                                       seeds=[payload["ft_seed"]], **args)
        folder = runs[payload["task"]][0].folder
        if trains:  # where the run was trained (not written when the cache had it)
            atomic_write_json(folder / "job.json", _job_record())
        return {"folder": str(folder), "trained": trains}
    if kind in ("chapter", "reader"):
        from .pipeline import Run, run_one

        run = Run(Path(payload["notebook"]), dict(payload["parameters"]), Path(payload["folder"]),
                  bool(payload["book"]))
        book_dir = None if payload.get("book_dir") is None else Path(payload["book_dir"])
        outcome = run_one(run, force=bool(payload["force"]), book_dir=book_dir)
        if outcome["executed"]:
            atomic_write_json(run.folder / "job.json", _job_record())
        return outcome
    raise ValueError(f"unknown job kind {kind!r}; one of {', '.join(KINDS)}")


def _job_record() -> dict[str, Any]:
    """Where a run was computed: the Slurm job and host (written into the run's folder)."""
    return {"slurm_job": slurm_job_id(), "host": socket.gethostname(),
            "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}


# --------------------------------------------------------------------------------------
# Submitting, watching, resubmitting
# --------------------------------------------------------------------------------------

def check_slurm() -> None:
    """ClusterError, before anything is planned, when submitit or Slurm's commands are missing."""
    try:
        import submitit  # noqa: F401
    except ImportError as err:
        raise ClusterError("--executor slurm needs the submitit package: pip install submitit "
                           "(it is in requirements.txt)") from err
    missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
    if missing:
        raise ClusterError(f"--executor slurm needs Slurm's commands on PATH; {', '.join(missing)} "
                           "not found. Run on a Slurm login node, or use the default local executor")


def _executor(folder: Path, options: SlurmOptions, *, name: str, after: Sequence[str] = ()):
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder / "logs"), max_num_timeout=3)
    params: dict[str, Any] = {"job_name": name, "time": options.time_min,
                              "cpus_per_task": options.cpus_per_job,
                              "signal_delay_s": 60,
                              "additional_parameters": {"kill-on-invalid-dep": "yes",
                                                        "requeue": True, **dict(options.extra)}}
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    if options.mem_gb:
        params["mem"] = f"{int(options.mem_gb * 1024)}M"
    if after:
        params["dependency"] = "afterok:" + ":".join(after)
    ex.update_parameters(**params)
    return ex


class Plan:
    """The jobs of one submission, kept in ``<folder>/plan.json``."""

    def __init__(self, folder: Path, jobs: Sequence[Job], options: SlurmOptions,
                 config: str = ""):
        self.folder, self.jobs, self.options, self.config = Path(folder), list(jobs), options, config
        self.by_name = {j.name: j for j in self.jobs}

    def save(self) -> None:
        atomic_write_json(self.folder / "plan.json", {
            "config": self.config, "options": asdict(self.options),
            "jobs": [asdict(j) for j in self.jobs]})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Plan:
        folder = Path(folder)
        path = folder / "plan.json"
        if not path.is_file():
            raise ClusterError(f"{folder} holds no plan.json: not a job folder of "
                               "`python -m ftgeo run --executor slurm`")
        data = json.loads(path.read_text(encoding="utf-8"))
        options = SlurmOptions(**data["options"])
        return cls(folder, [Job(**j) for j in data["jobs"]], options, data.get("config", ""))

    def submit(self, jobs: Sequence[Job] | None = None) -> None:
        """Submit ``jobs`` (default all), a job array per group, each after the current Slurm
        ids of the jobs it needs that are not done yet."""
        jobs = self.jobs if jobs is None else list(jobs)
        states = self.states()
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.group, []).append(job)
        for group, members in groups.items():
            after = sorted({self.by_name[a].ids[-1] for j in members for a in j.after
                            if a in self.by_name and states[a]["state"] != "done"
                            and self.by_name[a].ids})
            ex = _executor(self.folder, self.options, name=f"ftgeo-{group.split(':')[0]}",
                           after=after)
            submitted = ex.map_array(Work(self.folder), [j.name for j in members],
                                     [j.kind for j in members], [j.payload for j in members])
            for job, handle in zip(members, submitted, strict=True):
                job.ids.append(str(handle.job_id))
            log.info("submitted %d %s job(s) as %s%s", len(members), group,
                     str(submitted[0].job_id).split("_")[0],
                     f", after {', '.join(after)}" if after else "")
        self.save()

    def states(self) -> dict[str, dict[str, Any]]:
        """Each job's state: ``done``, ``failed``, ``running``, ``pending`` (queued, or requeued),
        ``lost`` (not in the queue, not finished: cancelled or killed) or ``blocked`` (a job
        it needs failed), with what its state file and the queue say."""
        queue = _queue()
        out: dict[str, dict[str, Any]] = {}
        for job in self.jobs:  # in plan order: a job's prerequisites come first
            path = _state_file(self.folder, job.name)
            try:
                recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            except ValueError:
                recorded = {}
            queued = queue.get(job.ids[-1]) if job.ids else None
            state = recorded.get("state")
            if state in ("done", "failed"):
                final = state
            elif queued is not None:
                final = "running" if queued in ("RUNNING", "COMPLETING") else "pending"
            elif any(out[a]["state"] in ("failed", "blocked") for a in job.after if a in out):
                final = "blocked"
            elif not job.ids:
                final = "unsubmitted"
            elif len(job.ids) > self.options.retries:  # lost once more than it may be resubmitted
                final = "failed"
                recorded = {**recorded, "error": recorded.get("error") or (
                    f"left the queue unfinished {len(job.ids)} times (cancelled, killed, or it "
                    "could not start: see its log)")}
            else:
                final = "lost"
            out[job.name] = {**recorded, "state": final, "slurm": queued,
                             "job_id": job.ids[-1] if job.ids else None, "attempts": len(job.ids)}
        return out

    def wait(self, *, poll_s: float = 5.0) -> dict[str, dict[str, Any]]:
        """Wait until every job is done, failed or blocked, resubmitting lost jobs (with the
        jobs after them that Slurm dropped) up to ``options.retries`` times; shows progress."""
        bar = progress_bar(desc="jobs", unit="job", total=len(self.jobs))
        seen_done = 0
        try:
            while True:
                states = self.states()
                lost = [j for j in self.jobs if states[j.name]["state"] == "lost"]
                again = [j for j in lost if len(j.ids) <= self.options.retries]
                if again:
                    log.warning("resubmitting %d job(s) that left the queue unfinished: %s",
                                len(again), ", ".join(j.name for j in again))
                    for job in again:  # one at a time: each after its own prerequisites
                        job.group = f"{job.kind}:{job.name}"
                        self.submit([job])
                    continue
                counts = {s: sum(v["state"] == s for v in states.values())
                          for s in ("done", "running", "pending", "failed", "blocked", "lost")}
                done = counts["done"]
                bar.update(done - seen_done)
                seen_done = done
                bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in counts.items() if v))
                if counts["running"] + counts["pending"] == 0:
                    return states
                time.sleep(poll_s)
        finally:
            bar.close()


def _queue(attempts: int = 5) -> dict[str, str]:
    """Slurm's queue: {job id (array tasks as ``ID_TASK``): state}; a failing ``squeue`` (a
    busy controller) is asked again a few times before ClusterError."""
    for attempt in range(attempts):
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True,
                                 text=True, timeout=60)
        except subprocess.TimeoutExpired:
            out = None
        if out is not None and out.returncode == 0:
            break
        time.sleep(min(2.0 ** attempt, 30.0))
    else:
        raise ClusterError(f"squeue failed {attempts} times: "
                           f"{out.stderr.strip() if out is not None else 'timed out'}")
    queue = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            queue[parts[0]] = parts[1]
    return queue


def latest_plan(root: Path | None = None) -> Path:
    """The most recent job folder under ``<artifacts>/jobs``."""
    root = (artifacts_dir() if root is None else Path(root)) / JOBS_DIR
    folders = sorted((p for p in root.glob("*") if (p / "plan.json").is_file()),
                     key=lambda p: p.stat().st_mtime)
    if not folders:
        raise ClusterError(f"no Slurm job plans under {root}: submit one with "
                           "`python -m ftgeo run --config C --executor slurm`")
    return folders[-1]


def run_on_slurm(runs: Sequence, *, config_name: str, options: SlurmOptions, force: bool = False,
                 book_dir: Path | None = None, wait: bool = True, poll_s: float = 5.0,
                 device: str = "cpu", check_cache: bool = True) -> dict[str, Any]:
    """Plan ``runs`` as Slurm jobs, submit them and (``wait``) wait for them. Returns
    ``{"folder": job folder, "jobs": n, "states": {name: state}}``; raises ClusterError when a
    job failed, naming it and its log."""
    check_slurm()
    options.validate()
    env = {"FTGEO_ARTIFACTS": str(artifacts_dir()), "FTGEO_DEVICE": device}
    for name in ("HF_HUB_OFFLINE", "HF_HOME", "FTGEO_CHECKPOINT_EVERY_S", "FTGEO_DATA"):
        if name in os.environ:
            env[name] = os.environ[name]
    jobs = plan_jobs(runs, force=force, book_dir=book_dir, env=env, check_cache=check_cache)
    folder = artifacts_dir() / JOBS_DIR / f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not jobs:
        log.info("every run is current: no jobs to submit")
        return {"folder": None, "jobs": 0, "states": {}}
    plan = Plan(folder, jobs, options, config_name)
    plan.submit()
    counts = {k: sum(j.kind == k for j in jobs) for k in KINDS}
    log.info("submitted %d job(s) (%s); their states: python -m ftgeo status --jobs %s",
             len(jobs), ", ".join(f"{v} {k}" for k, v in counts.items() if v), folder)
    if not wait:
        return {"folder": str(folder), "jobs": len(jobs), "states": {}}
    states = plan.wait(poll_s=poll_s)
    failed = {n: s for n, s in states.items() if s["state"] != "done"}
    if failed:
        lines = [f"{n}: {s['state']}{' (' + s['error'] + ')' if s.get('error') else ''}; log "
                 f"{folder / 'logs'}/{s['job_id']}_0_log.err" for n, s in failed.items()]
        raise ClusterError(f"{len(failed)} of {len(jobs)} Slurm job(s) did not finish:\n  "
                           + "\n  ".join(lines))
    return {"folder": str(folder), "jobs": len(jobs),
            "states": {n: s["state"] for n, s in states.items()}}


def status_report(folder: str | os.PathLike | None = None) -> str:
    """A table of the jobs of a plan (default the latest) and their states."""
    folder = latest_plan() if folder is None else Path(folder)
    plan = Plan.load(folder)
    states = plan.states()
    lines = [f"jobs of {folder} (config {plan.config or '?'}):", "",
             f"{'job':<60} {'kind':<8} {'slurm id':<12} {'state':<9} {'host':<12} restarts"]
    for job in plan.jobs:
        s = states[job.name]
        lines.append(f"{job.name[:60]:<60} {job.kind:<8} {str(s['job_id']):<12} {s['state']:<9} "
                     f"{str(s.get('host') or ''):<12} {s.get('restarts', 0)}")
        if s.get("error"):
            lines.append(f"    {s['error']}")
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    lines += ["", ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    return "\n".join(lines)
