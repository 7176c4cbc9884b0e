"""The Slurm executor on a real single-node Slurm cluster (.ci/slurm-up.sh starts one; CI
runs it before the tests). A small config fans out into fine-tuning, chapter and reader jobs;
a preempted fine-tuning job is requeued and resumes from its checkpoint, a cancelled job is
resubmitted, and the results equal those of a local run."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _slurm_reason() -> str | None:
    """Why Slurm cannot be used here, or None."""
    missing = [c for c in ("sbatch", "squeue", "scancel", "sinfo") if shutil.which(c) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing); .ci/slurm-up.sh installs it"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo does not answer: slurmctld is not running (start it with .ci/slurm-up.sh)"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s in ("idle", "mixed", "allocated") for s in states):
        return f"no usable Slurm node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


needs_slurm = pytest.mark.skipif(_slurm_reason() is not None, reason=str(_slurm_reason()))


def test_without_slurm_the_slurm_executor_stops_before_planning(tmp_path, monkeypatch, capsys,
                                                                tiny_bert_dir):
    from ftgeo.pipeline import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, scancel
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "artifacts"))
    assert main(["run", "--config", str(_config(tmp_path, tiny_bert_dir)), "--executor", "slurm"]) == 1
    err = capsys.readouterr().err
    assert "--executor slurm needs Slurm's commands on PATH; sbatch, squeue, scancel not found" in err
    assert not (tmp_path / "artifacts").exists()
    assert main(["run", "--executor", "slurm", "--slurm-arg", "account"]) == 1
    assert "--slurm-arg 'account': give KEY=VALUE" in capsys.readouterr().err




def _config(tmp_path: Path, model: Path) -> Path:
    """One chapter that reads fine-tuning (two tasks, two seeds) and one reader. POS trains
    long enough (200 steps) for a checkpoint to be caught and the job preempted."""
    config = {"name": "slurm-test", "model": str(model), "notebook_dir": str(ROOT / "notebooks"),
              "parameters": {"tasks": ["pos", "trec-50"], "max_sentences": 20,
                             "finetune": {"n_seeds": 2, "epochs": 200, "n_snapshots": 10}},
              "notebooks": [{"name": "02_finetuning", "parameters": {"pca_points": 30}},
                            {"name": "10_models"}]}
    path = tmp_path / "slurm-test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_for(predicate, what: str, timeout: float = 180.0, every: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _results(obj):
    """``obj`` without how long things took or how much a process computed (not results)."""
    if isinstance(obj, dict):
        return {k: _results(v) for k, v in obj.items() if k != "work" and not k.endswith("seconds")}
    return [_results(v) for v in obj] if isinstance(obj, list) else obj


def _metrics(runs_dir: Path, prefix: str) -> dict:
    (path,) = runs_dir.glob(f"{prefix}--*/metrics.json")
    return _results(json.loads(path.read_text()))


@pytest.fixture()
def cleanup():
    """Job folders whose jobs are cancelled at the end of the test, however it ends, so that
    a failed test leaves no jobs behind on the cluster."""
    from ftgeo.cluster import Plan

    folders = []
    yield folders
    for folder in folders:
        ids = [i for job in Plan.load(folder).jobs for i in job.ids]
        if ids:
            subprocess.run(["scancel", *ids], check=False, capture_output=True)


@needs_slurm
def test_a_config_fans_out_into_slurm_jobs_survives_preemption_and_cancel_and_matches_local(
        tmp_path, monkeypatch, tiny_bert_dir, cleanup):
    from ftgeo.cluster import Plan, SlurmOptions, status_report
    from ftgeo.pipeline import run_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FTGEO_PROGRESS", "0")
    monkeypatch.setenv("FTGEO_CHECKPOINT_EVERY_S", "0")  # a checkpoint at every snapshot
    config = _config(tmp_path, tiny_bert_dir)
    shared = tmp_path / "shared-artifacts"
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(shared))
    submitted = run_config(config, executor="slurm", slurm=SlurmOptions(time_min=30),
                           wait=False, book=False)
    folder = Path(submitted["folder"])
    plan = Plan.load(folder)
    cleanup.append(folder)
    kinds = [j.kind for j in plan.jobs]
    assert kinds == ["finetune"] * 4 + ["chapter", "reader"], kinds
    ft_ids = [j.ids[0] for j in plan.jobs if j.kind == "finetune"]
    assert len({i.split("_")[0] for i in ft_ids}) == 1  # one job array
    chapter, reader = plan.jobs[4], plan.jobs[5]
    assert set(chapter.after) == {j.name for j in plan.jobs[:4]} and reader.after == [chapter.name]

    # preempt a POS job once it has written a checkpoint: submitit requeues it. The job that
    # trains the run is the one its lock names
    finetune_dir = shared / "finetune"
    checkpoint = _wait_for(lambda: next(iter(finetune_dir.glob("pos-*/checkpoint.pt")), None),
                           "a POS checkpoint")
    job_id = json.loads((checkpoint.parent / ".lock").read_text())["slurm_job"]
    # (scancel may report "Job can not be altered now" for a step in transition while the
    # signal still reaches the job's Python process: the restart count below is the check)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=False)
    (pos,) = [j for j in plan.jobs if j.ids[0] == job_id]
    # cancel the chapter job outright while it waits: the waiting command resubmits it
    subprocess.run(["scancel", chapter.ids[0]], check=True)

    states = Plan.load(folder).wait(poll_s=1.0)
    assert {n: s["state"] for n, s in states.items()} == {j.name: "done" for j in plan.jobs}
    report = status_report(folder)
    assert "6 done" in report and pos.name in report

    # the preempted job ran twice and its run resumed from its checkpoint
    assert states[pos.name]["restarts"] >= 1
    run_dir = checkpoint.parent
    timing = json.loads((run_dir / "result.json").read_text())["timing"]
    assert timing.get("resumed_at"), timing
    assert not (run_dir / "checkpoint.pt").exists()
    # the cancelled chapter was resubmitted under a new id
    again = Plan.load(folder).by_name[chapter.name]
    assert len(again.ids) == 2 and again.ids[1] != again.ids[0]
    # every run was computed in a Slurm job
    for run in [*finetune_dir.glob("*/"), *(shared / "runs").glob("*/")]:
        record = json.loads((run / "job.json").read_text())
        assert record["slurm_job"], run

    # the same config, run locally into its own artifacts, gives the same results
    local = tmp_path / "local-artifacts"
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(local))
    run_config(config, book=False)
    for prefix in ("02_finetuning", "10_models"):  # equal to the last bit
        assert _metrics(shared / "runs", prefix) == _metrics(local / "runs", prefix), prefix


def test_job_states_follow_the_state_files_the_queue_and_the_retries(tmp_path, monkeypatch):
    """Without Slurm: a finished job is done, a queued one pending or running, one gone from
    the queue unfinished is lost (resubmittable) until it has used its retries, then failed;
    the jobs after a failed one are blocked."""
    from ftgeo import cluster
    from ftgeo.cluster import Job, Plan, SlurmOptions

    jobs = [Job("ft-a", "finetune", "finetune:m", [], {}, ["10_0"]),
            Job("ft-b", "finetune", "finetune:m", [], {}, ["10_1"]),
            Job("ft-c", "finetune", "finetune:m", [], {}, ["10_2", "14", "15"]),
            Job("ch-a", "chapter", "chapter:m", ["ft-a", "ft-b"], {}, ["11_0"]),
            Job("ch-c", "chapter", "chapter:m", ["ft-c"], {}, ["11_1"]),
            Job("reader", "reader", "reader", ["ch-a", "ch-c"], {}, ["12"])]
    plan = Plan(tmp_path, jobs, SlurmOptions(retries=2))
    queue = {"10_1": "RUNNING", "11_0": "PENDING", "12": "PENDING"}
    monkeypatch.setattr(cluster, "_queue", lambda: dict(queue))
    cluster.atomic_write_json(tmp_path / "state" / "ft-a.json", {"state": "done", "host": "n1"})
    states = plan.states()
    assert {n: s["state"] for n, s in states.items()} == {
        "ft-a": "done", "ft-b": "running", "ft-c": "failed", "ch-a": "pending",
        "ch-c": "blocked", "reader": "pending"}
    assert "left the queue unfinished 3 times" in states["ft-c"]["error"]
    # ft-b disappears unfinished (scancel): lost, and resubmittable; ch-a then waits on it
    del queue["10_1"]
    assert plan.states()["ft-b"]["state"] == "lost"
    # ft-b fails in Python: once Slurm drops the chapter after it, that chapter is blocked
    # (not lost: it is not resubmitted); a job still in the queue stays pending until then
    cluster.atomic_write_json(tmp_path / "state" / "ft-b.json", {"state": "failed", "error": "boom"})
    del queue["11_0"]
    states = plan.states()
    assert states["ft-b"]["state"] == "failed" and states["ch-a"]["state"] == "blocked"
    assert states["reader"]["state"] == "pending"  # still queued: Slurm has not dropped it yet
