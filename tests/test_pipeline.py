"""The papermill pipeline: runs into folders, skips unchanged runs, names the failing cell,
and reruns chapter 1 on another model with no code change."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from conftest import needs_data, toy_notebook
from ftgeo import pipeline
from ftgeo.finetune import ChapterFinetuning
from ftgeo.pipeline import PipelineError, load_config, run_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_artifacts(tmp_path, monkeypatch):
    """Every test gets its own artifacts directory, so that run_config takes its lock there
    and never collides with a pipeline running on the checkout's artifacts/."""
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "artifacts"))


def _config(tmp_path: Path, body: str, **extra) -> Path:
    (tmp_path / "nbs").mkdir(exist_ok=True)
    toy_notebook(tmp_path / "nbs" / "toy.ipynb", body)
    config = {"name": "toy", "model": "minilm", "notebook_dir": "nbs",
              "parameters": {"value": 2}, "notebooks": ["toy"], **extra}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


GOOD = "import ftgeo\nftgeo.save_metrics(output_dir, {'twice': 2 * value})"


def test_run_writes_folder_and_skips_when_unchanged(tmp_path):
    config = _config(tmp_path, GOOD, book=True)
    kw = {"runs_dir": tmp_path / "runs", "book_dir": tmp_path / "book"}
    first = run_config(config, **kw)
    assert first["executed"] == ["toy"] and first["skipped"] == []
    folder = Path(first["runs"][0])
    assert json.loads((folder / "metrics.json").read_text())["twice"] == 4
    assert json.loads((folder / "params.json").read_text())["value"] == 2
    out = nbformat.read(folder / "toy.ipynb", as_version=4)
    injected = [c for c in out.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata["tags"]
    # the parameters cell is hidden and a visible table states the values used and defaults
    params = [c for c in out.cells if "parameters" in c.metadata.get("tags", [])]
    assert "remove-cell" in params[0].metadata["tags"]
    table = [c for c in out.cells if pipeline.PARAMETER_TABLE_TAG in c.metadata.get("tags", [])]
    assert len(table) == 1 and table[0].cell_type == "markdown"
    assert "| `value` | `2` | `1` | a number |" in table[0].source
    assert "output_dir" not in table[0].source
    assert (tmp_path / "book" / "toy.ipynb").exists()
    second = run_config(config, **kw)
    assert second["executed"] == [] and second["skipped"] == ["toy"]
    assert second["forward_batches"] == 0
    third = run_config(config, tasks=None, force=True, **kw)
    assert third["executed"] == ["toy"]


def test_changed_parameter_makes_a_new_run_folder(tmp_path):
    config = _config(tmp_path, GOOD)
    kw = {"runs_dir": tmp_path / "runs", "book_dir": tmp_path / "book"}
    a = run_config(config, **kw)
    cfg = yaml.safe_load(config.read_text())
    cfg["parameters"]["value"] = 3
    config.write_text(yaml.safe_dump(cfg))
    b = run_config(config, **kw)
    assert b["executed"] == ["toy"] and a["runs"] != b["runs"]
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_a_gpu_run_gets_its_own_folder_and_the_cpus_keeps_its_name(tmp_path):
    from ftgeo.pipeline import load_config, plan

    config = load_config(_config(tmp_path, GOOD))
    default = plan(config, runs_dir=tmp_path / "runs")
    cpu = plan(config, runs_dir=tmp_path / "runs", device="cpu")
    gpu = plan(config, runs_dir=tmp_path / "runs", device="cuda:0")
    assert [r.folder for r in cpu] == [r.folder for r in default]
    assert {r.folder for r in gpu}.isdisjoint(r.folder for r in cpu)
    assert all(r.parameters["output_dir"] == str(r.folder) for r in gpu)


def test_failing_notebook_is_named_with_its_cell(tmp_path):
    config = _config(tmp_path, "raise RuntimeError('boom in the compute cell')")
    with pytest.raises(PipelineError, match=r"toy\.ipynb failed in cell \d+.*RuntimeError.*boom"):
        run_config(config, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book")
    assert list((tmp_path / "runs").glob("*/toy.failed.ipynb"))


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: minilm\nnotebooks: [x]\nepochs: 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epochs'\]"):
        load_config(path)
    path.write_text("model: minilm\nnotebooks: [no_such_notebook]\n")
    with pytest.raises(FileNotFoundError, match="no_such_notebook"):
        pipeline.plan(load_config(path))
    with pytest.raises(ValueError, match="unknown task 'ner'"):
        pipeline.plan(load_config(ROOT / "configs" / "default.yaml"), tasks=["ner"])


def test_unknown_parameter_stops_before_anything_runs(tmp_path):
    config = _config(tmp_path, GOOD)
    cfg = yaml.safe_load(config.read_text())
    cfg["parameters"]["valeu"] = 3  # a typo
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"unknown parameter 'valeu'.*notebooks toy declares it"):
        run_config(config, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book")
    assert not (tmp_path / "runs").exists()
    proc = subprocess.run([sys.executable, "-m", "ftgeo", "run",
                           "--config", str(ROOT / "configs" / "default.yaml"),
                           "-p", "epochz", "3"], capture_output=True, text=True,
                          env={**os.environ, "FTGEO_ARTIFACTS": str(tmp_path / "artifacts")})
    assert proc.returncode == 1 and "unknown parameter 'epochz'" in proc.stderr
    assert "02_finetuning" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "artifacts" / "runs").exists()


def test_parameter_of_the_wrong_type_is_named_with_what_is_expected(tmp_path):
    config = _config(tmp_path, GOOD)
    with pytest.raises(ValueError,
                       match=r"parameter 'value' is 'two', but notebook 'toy' expects an integer"):
        run_config(config, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book",
                   parameters={"value": "two"})
    default = load_config(ROOT / "configs" / "default.yaml")
    with pytest.raises(ValueError, match=r"parameter 'tasks' is 'pos', but the notebooks expect a list"):
        pipeline.plan({**default, "parameters": {"tasks": "pos"}}, runs_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'max_sentences' is \[20\], but notebook "
                                         r"'\w+' expects an integer"):  # the config's first
        pipeline.plan(default, runs_dir=tmp_path, parameters={"max_sentences": [20]})
    # the probe parameters' values are checked too, before anything runs
    with pytest.raises(ValueError, match=r"grid_search must be one of \['every seed', 'first seed'\], "
                                         r"got 'first'"):
        pipeline.plan(default, runs_dir=tmp_path, parameters={"grid_search": "first"})
    with pytest.raises(ValueError, match=r"probe_autocast must be None \(float32\) or 'bf16', got 'fp16'"):
        pipeline.plan(default, runs_dir=tmp_path, parameters={"probe_autocast": "fp16"})
    # a parameter reaches only the notebooks that declare it
    runs = pipeline.plan(default, runs_dir=tmp_path, parameters={"probe_seeds": 2})
    assert {r.name for r in runs if "probe_seeds" in r.parameters} == {"03_probing_performance",
                                                                         "06_cross_task"}


def test_a_config_can_list_models_with_their_own_parameters(tmp_path):
    runs = pipeline.plan(load_config(ROOT / "configs" / "paper.yaml"), runs_dir=tmp_path)
    by_model = {}
    for run in runs:
        by_model.setdefault(run.parameters["model"], []).append(run)
    chapters = [nb.stem for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    assert len(by_model) == 5 and all(sorted(r.name for r in rs) == chapters for rs in by_model.values())
    # the readers (comparison, scorecard) go after every model's chapters
    assert {r.name for r in runs[-10:]} == {"10_models", "scorecard"}
    epochs = {m: {r.parameters["finetune"]["epochs"] for r in rs if r.name == "02_finetuning"}
              for m, rs in by_model.items()}
    assert epochs["bert-base-uncased"] == {3} and epochs["google/bert_uncased_L-2_H-128_A-2"] == {10}
    # the paper's fine-tuning: Adam without weight decay, learning rate 3e-4, for every model
    settings = [ChapterFinetuning.from_mapping(r.parameters["finetune"]).settings
                for r in runs if r.name == "02_finetuning"]
    assert {(s.learning_rate, s.weight_decay, s.warmup, s.batch_size)
            for s in settings} == {(3e-4, 0.0, 0.1, 32)}
    assert not any("finetune" in r.parameters for r in runs if r.name == "01_tasks_and_representations")
    assert len({r.folder for r in runs}) == 5 * len(chapters) and not any(r.book for r in runs)
    phang = pipeline.plan(load_config(ROOT / "configs" / "phang.yaml"), runs_dir=tmp_path)
    assert {r.parameters["model"] for r in phang if r.name == "09_cka"} == {"roberta-base",
                                                                          "albert-base-v2"}
    # --model overrides the list
    assert {r.parameters["model"] for r in pipeline.plan(load_config(ROOT / "configs" / "paper.yaml"),
                                                         model="minilm")} == {"minilm"}
    path = tmp_path / "c.yaml"
    path.write_text("models: [{model: a, epochs: 3}]\nnotebooks: [x]\n")
    with pytest.raises(ValueError, match=r"models\[0\] must be a model id or a mapping"):
        load_config(path)
    path.write_text("model: a\nmodels: [b]\nnotebooks: [x]\n")
    with pytest.raises(ValueError, match="either 'model' or 'models'"):
        load_config(path)


def test_cli_reports_errors_without_a_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("notebooks: [x]\nfoo: 1\n")
    proc = subprocess.run([sys.executable, "-m", "ftgeo", "run", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "ftgeo: error:" in proc.stderr and "foo" in proc.stderr
    assert "Traceback" not in proc.stderr


SMALL_MLP = {"probe_hidden_sizes": [8], "probe_alpha": [1e-3], "probe_seeds": 2}
TINY = {"tasks": ["pos", "dep"], "max_sentences": 4}


@needs_data("ud-english-pud", "trec")
def test_chapters_rerun_on_another_model_folder(tmp_path, tiny_bert_dir, monkeypatch):
    """`--model FOLDER` reruns every chapter on a small BERT saved from a config, with no code
    change, and the scorecard scores it. Chapters 05-07 run on 4 sentences of POS and DEP:
    on this randomly initialized BERT, labels split into many clusters, and the hull
    distances between all of them take minutes on larger samples."""
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "artifacts"))
    config = tmp_path / "smoke.yaml"
    # 10 pairs: one batch; 10 snapshots need 9 steps
    GLUE = {"glue_tasks": ["mrpc"], "finetune": {"glue_epochs": 10, "n_seeds": 2}}
    notebooks = ["01_tasks_and_representations", "02_finetuning",
                 {"name": "03_probing_performance", "parameters": SMALL_MLP},
                 "04_linearity",
                 {"name": "05_spatial_structure", "parameters": TINY},
                 {"name": "06_cross_task", "parameters": {"max_sentences": 4, "target": "dep",
                                                          "sources": ["pos"], **SMALL_MLP}},
                 {"name": "07_layers", "parameters": TINY},
                 {"name": "08_isotropy", "parameters": {**GLUE, "max_items": 100, "n_clusters": 3,
                                                        "n_top": 3, "removed_grid": [1, 2]}},
                 {"name": "09_cka", "parameters": GLUE},
                 "10_models",
                 {"name": "scorecard", "parameters": {"max_sentences": 10}}]
    config.write_text(yaml.safe_dump({
        "name": "smoke", "model": "minilm",
        "parameters": {"tasks": ["pos", "dep", "trec-50"], "max_sentences": 10, "pca_points": 40,
                       "finetune": {"n_seeds": 2}},
        "notebooks": notebooks}))
    summary = run_config(config, model=str(tiny_bert_dir))
    folders = [Path(f) for f in summary["runs"]]
    assert len(folders) == 11 and all(tiny_bert_dir.name in f.name for f in folders)
    metrics = [json.loads((f / "metrics.json").read_text()) for f in folders]
    first, finetuned = metrics[0], metrics[1]
    assert first["n_layers"] == 3 and first["n_features"] == 32
    assert len(first["tasks"]["dep"]["linear_probe_test_accuracy"]) == 3
    assert (folders[0] / "figures" / "pca_layers.png").exists()
    # every chapter names the model's weights (chapter 10 compares all models: it has none)
    assert {m["fingerprint"] for m in metrics if m.get("chapter") != "10_models"} == {first["fingerprint"]}
    assert set(finetuned["tasks"]) == {"pos", "dep", "trec-50"}
    for task in finetuned["tasks"].values():
        assert len(task["linear_probe_finetuned_test_accuracy"]) == 3
        assert 0 <= task["finetuned_test_accuracy"] <= 1
    assert (folders[1] / "figures" / "trajectory_pos.html").exists()
    assert len(metrics[2]["tasks"]["pos"]["mlp_finetuned"]) == 2
    # two fine-tuning seeds: chapters 2 and 3 report each
    assert len(finetuned["tasks"]["pos"]["finetuned_test_accuracy_seeds"]) == 2
    assert len(metrics[2]["tasks"]["pos"]["mlp_finetuned_seeds"]) == 2
    # seeds 0 and 1 of each training set the chapters read (10 sentences; 4 for chapters 5, 7)
    pos_runs = (tmp_path / "artifacts" / "finetune").glob("pos-*/result.json")
    assert sorted(json.loads(f.read_text())["settings"]["seed"] for f in pos_runs) == [0, 0, 1, 1]
    assert metrics[3]["tasks"]["pos"]["clusters_finetuned"] >= metrics[3]["tasks"]["pos"]["n_labels"]
    assert set(metrics[4]["tasks"]) == {"pos", "dep"}
    assert metrics[5]["target"] == "dep" and "finetuned on pos" in metrics[5]["states"]
    assert len(metrics[6]["tasks"]["dep"]["final_similarity"]) == 2  # transformer layers 1, 2
    # chapters 5, 6 and 7 read both fine-tuning seeds too
    assert len(metrics[4]["tasks"]["pos"]["min_distance_seeds"]) == 2
    assert len(metrics[5]["states"]["finetuned on pos"]["mlp_seeds"]) == 2
    assert metrics[5]["states"]["pretrained"]["mlp_seeds"] is None
    assert [len(s) for s in metrics[6]["tasks"]["dep"]["final_similarity_seeds"]] == [2, 2]
    isotropy, cka = metrics[7], metrics[8]
    assert set(isotropy["tasks"]) == set(cka["tasks"]) == {"pos", "dep", "trec-50", "mrpc"}
    assert isotropy["tasks"]["pos"]["n_removed"] == 1  # n_features / 100 for 32 features, at least 1
    assert isotropy["tasks"]["dep"]["word_share"]["pretrained"] is not None
    # isotropy reads every token, so the sentence tasks have a token-identity share too
    assert isotropy["vectors"] == "tokens"
    assert isotropy["tasks"]["mrpc"]["word_share"]["pretrained"] is not None
    assert isotropy["tasks"]["mrpc"]["n_vectors"] > isotropy["tasks"]["mrpc"]["n_test"]
    assert cka["tasks"]["pos"]["layers"] == [0, 1, 2] and len(cka["tasks"]["pos"]["cka_finetuned"]) == 3
    assert cka["tasks"]["mrpc"]["layers"] == [1, 2]  # [CLS] at layer 0 is the same for every pair
    assert len(cka["tasks"]["pos"]["dropping"]) == 3
    compared = metrics[9]
    assert compared["models"] == [tiny_bert_dir.name] and compared["max_sentences"] == 10
    assert {"MLP probe accuracy", "DirectProbe clusters per label", "IsoScore (last layer)",
            "CKA block contrast"} <= set(compared["mean_change"][tiny_bert_dir.name])
    claims = {c["id"]: c for c in metrics[10]["claims"]}
    assert len(claims) == 24
    scored = ("holds", "does not hold")
    for claim in ("rp-not-more-isotropic", "rp-stays-anisotropic", "rp-elongated", "rp-top-carries",
                  "plb-blocks", "plb-drop", "zs-linear-after", "zs-trec-nonlinear"):
        assert claims[claim]["verdict"] in scored, claims[claim]
    # a claim about BERT-tiny does not apply to this 32-wide BERT, and says why
    assert claims["zs-tiny-nonlinear"]["verdict"] == "not testable here"
    assert "BERT-tiny" in claims["zs-tiny-nonlinear"]["ours"]
    # the paper's enhancement evaluation (a classifier trained on the enhanced vectors) scores
    assert claims["rp-enhancement"]["verdict"] in scored, claims["rp-enhancement"]
    # 05-07 ran on fewer sentences than the scorecard scores, and no PS-fxn: those claims
    # are untestable, and say so
    assert {c["verdict"] for c in claims.values() if c["section"] in ("4.3", "4.4", "4.5")} == {
        "not testable here"}


def test_a_second_model_adds_a_column_to_the_comparison(tmp_path, tiny_bert_dir, monkeypatch):
    """Running the pipeline on a second model folder adds a column to chapter 10 with no code
    change; rerunning the first model's pipeline then re-executes only the notebooks that read
    other runs (chapter 10), because a run they read is new."""
    import torch
    from transformers import BertConfig, BertModel

    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "artifacts"))
    second = tmp_path / "other-bert"
    torch.manual_seed(1)
    BertModel(BertConfig.from_pretrained(tiny_bert_dir)).save_pretrained(second)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_bert_dir / name).exists():
            (second / name).write_bytes((tiny_bert_dir / name).read_bytes())
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump({
        "name": "compare", "parameters": {"tasks": ["pos"], "max_sentences": 10},
        "notebooks": ["10_models", "02_finetuning", "scorecard"]}))  # readers run last anyway
    first = run_config(config, model=str(tiny_bert_dir))
    assert first["executed"] == ["02_finetuning", "10_models", "scorecard"]
    added = run_config(config, model=str(second))
    assert added["executed"] == ["02_finetuning", "10_models", "scorecard"]
    columns = json.loads((Path(added["runs"][1]) / "metrics.json").read_text())["models"]
    assert columns == sorted([tiny_bert_dir.name, "other-bert"])
    # the two readers do not make each other stale: only the new run counts
    again = run_config(config, model=str(tiny_bert_dir))
    assert again["skipped"] == ["02_finetuning"]
    assert again["executed"] == ["10_models", "scorecard"]
    assert json.loads((Path(again["runs"][1]) / "metrics.json").read_text())["models"] == columns
    assert run_config(config, model=str(tiny_bert_dir))["executed"] == []  # nothing new to read


def test_the_book_gets_an_execution_page_and_the_terminal_sees_the_kernel(tmp_path):
    body = ("import time\nfrom ftgeo._util import progress\nimport ftgeo\n"
            "for i in progress(range(10), desc='toy loop'):\n    time.sleep(0.5)\n"
            "ftgeo.save_metrics(output_dir, {'twice': 2 * value})")
    config = _config(tmp_path, body, book=True)
    seen = []
    run = pipeline.plan(load_config(config), runs_dir=tmp_path / "runs")[0]
    pipeline.execute(run, show=seen.append)
    assert any(line.startswith("toy loop:") for line in seen), seen  # the kernel's loop, as it ran
    assert not (run.folder / ".status").exists()
    kw = {"runs_dir": tmp_path / "runs", "book_dir": tmp_path / "book"}
    run_config(config, **kw)
    page = (tmp_path / "book" / "execution.md").read_text()
    assert "| toy | `minilm` |" in page and "| executed |" in page
    run_config(config, **kw)
    page = (tmp_path / "book" / "execution.md").read_text()
    assert "reused (unchanged)" in page and "executed 0 of 1 notebooks" in page


def test_chapters_name_their_fine_tuning_and_only_read_it(tmp_path):
    nbs = ROOT / "notebooks"
    cross = pipeline.finetuning_needed(nbs / "06_cross_task.ipynb", {"model": "m", "max_sentences": 4})
    assert cross == {"model": "m", "tasks": ["ps-role", "pos", "ps-fxn"], "seed": 0, "finetune": {},
                     "max_sentences": 4}
    iso = pipeline.finetuning_needed(nbs / "08_isotropy.ipynb", {"model": "m", "tasks": ["pos"],
                                                                  "finetune": {"epochs": 2}})
    assert iso["tasks"] == ["pos", "sst-2", "mrpc"] and iso["finetune"] == {"epochs": 2}
    assert pipeline.finetuning_needed(nbs / "01_tasks_and_representations.ipynb", {"model": "m"}) is None
    assert pipeline.finetuning_needed(nbs / "scorecard.ipynb", {"model": "m"}) is None
    # nothing in a chapter trains: every chapter that reads runs gets them from chapter_runs
    for nb in sorted(nbs.glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code")
        assert "finetune(" not in code.replace("chapter_runs(", ""), nb.name
        assert "train=True" not in code, nb.name
    with pytest.raises(ValueError, match=r"finetune: unknown setting\(s\) \['epochz'\]"):
        pipeline.plan(load_config(ROOT / "configs" / "default.yaml"), runs_dir=tmp_path,
                      parameters={"finetune": {"epochz": 3}})


@needs_data("ud-english-pud")
def test_a_chapter_without_its_fine_tuned_run_says_which_command_makes_it(tmp_path, tiny_bert_dir,
                                                                          monkeypatch):
    from ftgeo.finetune import MissingRunError, chapter_runs

    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "artifacts"))
    with pytest.raises(MissingRunError, match=r"on pos .*python -m ftgeo run --config CONFIG"):
        chapter_runs(str(tiny_bert_dir), ["pos"], max_sentences=4)
    assert not (tmp_path / "artifacts" / "finetune").exists() or not list(
        (tmp_path / "artifacts" / "finetune").glob("*/result.json"))


@needs_data("ud-english-pud")
def test_every_fine_tuning_seed_is_trained_and_read(tmp_path, tiny_bert_dir, monkeypatch):
    """n_seeds runs per task, seeds seed, seed + 1, ...: the fine-tuning stage (train=True)
    trains them all; chapter_runs reads the first, chapter_seed_runs every one; a missing
    further seed is an error, not a silent single seed."""
    import shutil

    from ftgeo.finetune import ChapterFinetuning, MissingRunError, chapter_runs, chapter_seed_runs

    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "artifacts"))
    plan = {"epochs": 1, "batch_size": 4, "n_snapshots": 2, "seed": 5, "n_seeds": 2}
    with pytest.raises(ValueError, match="n_seeds must be a whole number >= 1"):
        ChapterFinetuning.from_mapping({**plan, "n_seeds": 0})
    with pytest.raises(ValueError, match="glue_train_sentences must be a whole number >= 1 or None"):
        ChapterFinetuning.from_mapping({**plan, "glue_train_sentences": 2.5})
    # whole numbers given as floats or numpy integers name the same runs as ints
    same = ChapterFinetuning.from_mapping({**plan, "n_seeds": 2.0, "epochs": np.int64(1)})
    assert same == ChapterFinetuning.from_mapping(plan) and type(same.n_seeds) is int
    _, _, first = chapter_runs(str(tiny_bert_dir), ["pos"], finetune=plan, max_sentences=8, train=True)
    _, _, runs = chapter_seed_runs(str(tiny_bert_dir), ["pos"], finetune=plan, max_sentences=8)
    assert [r.settings.seed for r in runs["pos"]] == [5, 6]
    assert runs["pos"][0].folder == first["pos"].folder != runs["pos"][1].folder
    assert not np.array_equal(runs["pos"][0].losses, runs["pos"][1].losses)
    shutil.rmtree(runs["pos"][1].folder)
    assert chapter_runs(str(tiny_bert_dir), ["pos"], finetune=plan, max_sentences=8)[2]["pos"].folder \
        == first["pos"].folder
    with pytest.raises(MissingRunError):
        chapter_seed_runs(str(tiny_bert_dir), ["pos"], finetune=plan, max_sentences=8)


def test_a_device_that_is_not_there_stops_the_run_before_anything_runs(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    config = _config(tmp_path, GOOD)
    with pytest.raises(ValueError, match=r"--device: device 'cuda': .*sees no CUDA GPU"):
        run_config(config, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book", device="cuda")
    bad = _config(tmp_path, GOOD, device="gpu0")
    with pytest.raises(ValueError, match=r"toy.yaml: device: device 'gpu0' is not one of"):
        run_config(bad, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book")
    assert not (tmp_path / "runs").exists()
    proc = subprocess.run([sys.executable, "-m", "ftgeo", "run", "--config", str(config),
                           "--device", "cuda"], capture_output=True, text=True,
                          env={**os.environ, "FTGEO_ARTIFACTS": str(tmp_path / "artifacts")})
    assert proc.returncode == 1 and "sees no CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    cpu = run_config(_config(tmp_path, GOOD, device="cpu"), runs_dir=tmp_path / "runs",
                     book_dir=tmp_path / "book")
    assert cpu["executed"] == ["toy"]


@needs_data("ud-english-pud", "trec")
def test_fine_tuning_runs_side_by_side_are_the_runs_one_process_trains(tmp_path, tiny_bert_dir,
                                                                       monkeypatch, caplog):
    """finetune_workers: the fine-tuning stage trains the unfinished runs in worker processes,
    each with its share of the cores; a run is the same as one trained in this process on
    one thread (same losses to the bit), and a refused worker count is named."""
    import logging

    import torch

    from ftgeo.finetune import chapter_seed_runs

    plan = {"epochs": 1, "batch_size": 4, "n_snapshots": 2, "n_seeds": 2}
    spec = {"model": str(tiny_bert_dir), "tasks": ["pos", "trec-50"], "seed": 0,
            "finetune": plan, "max_sentences": 8}
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "side"))
    with caplog.at_level(logging.INFO, logger="ftgeo"):
        pipeline._train_side_by_side(spec, 2)
    assert "4 runs, 2 side by side" in caplog.text and "(4 of 4 runs)" in caplog.text
    # seed by seed: the runs side by side are of different tasks
    assert caplog.text.index("trec-50 seed 0") < caplog.text.index("pos seed 1")
    _, _, side = chapter_seed_runs(str(tiny_bert_dir), spec["tasks"], finetune=plan, max_sentences=8)
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "alone"))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // 2))
    try:
        _, _, alone = chapter_seed_runs(str(tiny_bert_dir), spec["tasks"], finetune=plan,
                                        max_sentences=8, train=True)
    finally:
        torch.set_num_threads(threads)
    for task in spec["tasks"]:
        assert [r.key for r in side[task]] == [r.key for r in alone[task]]
        for a, b in zip(side[task], alone[task], strict=True):
            np.testing.assert_array_equal(a.losses, b.losses)
    config = _config(tmp_path, GOOD, finetune_workers=0)
    with pytest.raises(ValueError, match="finetune_workers must be a whole number >= 1, got 0"):
        run_config(config)
    # a run that fails in its worker stops the stage and is named
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "finetune").write_text("a file where the runs' folder should be")
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "broken"))
    with pytest.raises(PipelineError, match=r"on (pos|trec-50) \(seed 0\) failed in its worker"):
        pipeline._train_side_by_side(spec, 2)


def _side_by_side_config(tmp_path: Path, bodies: dict[str, str], reader: str | None = None,
                         **extra) -> Path:
    """A config of toy notebooks (name: code), and optionally one that reads the others' runs."""
    (tmp_path / "nbs").mkdir(exist_ok=True)
    for name, body in bodies.items():
        toy_notebook(tmp_path / "nbs" / f"{name}.ipynb", body)
    names = list(bodies)
    if reader is not None:
        path = tmp_path / "nbs" / "reader.ipynb"
        toy_notebook(path, reader)
        nb = nbformat.read(path, as_version=4)
        nb.metadata["ftgeo"] = {"reads_runs": True}
        nbformat.write(nb, path)
        names.append("reader")
    config = {"name": "toy", "model": "minilm", "notebook_dir": "nbs", "parameters": {"value": 2},
              "notebooks": names, **extra}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_chapters_side_by_side_run_at_once_on_a_share_of_the_cores(tmp_path):
    """chapter_workers: the notebooks that read no other run execute in worker processes at
    the same time (each waits for the other's mark: one at a time, neither would finish),
    their kernels on an equal share of torch's threads; the readers run after them."""
    import torch

    marks = tmp_path / "marks"
    marks.mkdir()

    def waits_for(mine: str, other: str) -> str:
        return (f"import os, time, json\nimport ftgeo\nfrom pathlib import Path\n"
                f"Path({str(marks / mine)!r}).touch()\nend = time.time() + 60\n"
                f"while not Path({str(marks / other)!r}).exists():\n"
                f"    assert time.time() < end, 'the other notebook never started'\n"
                f"    time.sleep(0.1)\n"
                f"import torch\n"
                f"ftgeo.save_metrics(output_dir, {{'pid': os.getpid(), "
                f"'threads': os.environ.get('OMP_NUM_THREADS'), 'torch': torch.get_num_threads(), "
                f"'mkl_dynamic': os.environ.get('MKL_DYNAMIC')}})")

    reader = ("import json\nimport ftgeo\nfrom pathlib import Path\n"
              "runs = Path(output_dir).parent.glob('*/metrics.json')\n"
              "seen = sorted(p.parent.name.split('--')[0] for p in runs)\n"
              "ftgeo.save_metrics(output_dir, {'seen': seen})")
    config = _side_by_side_config(tmp_path, {"a": waits_for("a", "b"), "b": waits_for("b", "a")},
                                  reader=reader, chapter_workers=2, book=True)
    kw = {"runs_dir": tmp_path / "runs", "book_dir": tmp_path / "book"}
    summary = run_config(config, **kw)
    assert summary["executed"] == ["a", "b", "reader"]
    a, b, read = (json.loads((Path(r) / "metrics.json").read_text()) for r in summary["runs"])
    share = max(1, torch.get_num_threads() // 2)
    assert a["threads"] == b["threads"] == str(share) and a["torch"] == b["torch"] == share
    assert a["mkl_dynamic"] == b["mkl_dynamic"] == "FALSE"
    assert read["seen"] == ["a", "b"]  # the reader ran once both had finished
    page = (tmp_path / "book" / "execution.md").read_text()
    assert "executed 3 of 3 notebooks" in page and "minutes of wall time" in page
    assert (tmp_path / "book" / "a.ipynb").exists() and (tmp_path / "book" / "execution.md").exists()
    # unchanged runs are skipped without starting workers; --chapter-workers overrides the config
    assert run_config(config, **kw)["skipped"] == ["a", "b", "reader"]
    with pytest.raises(ValueError, match="--chapter-workers: chapter_workers must be a whole "
                                         "number >= 1, got 0"):
        run_config(config, chapter_workers=0, **kw)
    (tmp_path / "bad").mkdir()
    bad = _side_by_side_config(tmp_path / "bad", {"a": GOOD}, chapter_workers=-1)
    with pytest.raises(ValueError, match=r"toy\.yaml: chapter_workers must be a whole number"):
        run_config(bad, runs_dir=tmp_path / "bad" / "runs")


def test_a_chapter_failing_side_by_side_is_named_and_stops_the_others(tmp_path):
    """The failing notebook is named with its cell; the one beside it is stopped at once,
    its kernel too (no kernel left running), not waited for."""
    pid_file = tmp_path / "slow.pid"
    slow = (f"import os, time\nfrom pathlib import Path\n"
            f"Path({str(pid_file)!r}).write_text(str(os.getpid()))\ntime.sleep(120)")
    broken = (f"import time\nfrom pathlib import Path\nwhile not Path({str(pid_file)!r}).exists():\n"
              "    time.sleep(0.1)\nraise RuntimeError('boom beside another chapter')")
    config = _side_by_side_config(tmp_path, {"slow": slow, "broken": broken}, chapter_workers=2)
    start = time.monotonic()
    with pytest.raises(PipelineError, match=r"broken\.ipynb failed in cell \d+.*RuntimeError.*boom"):
        run_config(config, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book")
    assert time.monotonic() - start < 100  # the slow one was stopped, not waited for
    kernel = int(pid_file.read_text())
    end = time.monotonic() + 20
    while _alive(kernel) and time.monotonic() < end:
        time.sleep(0.2)
    assert not _alive(kernel), "the stopped notebook's kernel is still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_a_kernel_that_dies_side_by_side_is_named(tmp_path):
    """A kernel killed under its notebook (out of memory, say) is an error naming the notebook,
    not a bare traceback from the worker pool."""
    dies = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    config = _side_by_side_config(tmp_path, {"a": GOOD, "dies": dies}, chapter_workers=2)
    with pytest.raises(PipelineError, match=r"dies\.ipynb failed"):
        run_config(config, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book")


@pytest.mark.parametrize(("given", "expected"), [(None, "FALSE"), ("TRUE", "TRUE")])
def test_importing_ftgeo_fixes_mkl_thread_count_unless_the_environment_says_otherwise(given, expected):
    """MKL's dynamic threading changed golden 03's last digits under load: ``import ftgeo``
    turns it off for itself and what it starts, but a user's own setting wins."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_DYNAMIC"}
    if given is not None:
        env["MKL_DYNAMIC"] = given
    out = subprocess.run([sys.executable, "-c", "import os, ftgeo; print(os.environ.get('MKL_DYNAMIC'))"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == expected


def test_thread_variables_are_set_together(monkeypatch):
    from ftgeo._util import THREAD_VARIABLES, set_thread_variables

    for var in (*THREAD_VARIABLES, "MKL_DYNAMIC"):
        monkeypatch.setenv(var, "7")
    set_thread_variables(3)
    assert [os.environ[v] for v in THREAD_VARIABLES] == ["3"] * 3 and os.environ["MKL_DYNAMIC"] == "FALSE"
