"""Fine-tuning core: heads for every item kind, memorizing a synthetic task, determinism,
and bad settings refused by name."""

import numpy as np
import pytest
import torch

from ftgeo import load_model
from ftgeo.data import TaskData
from ftgeo.finetune import FinetuneSettings, finetune

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dogs", "run", "fast", "and", "birds", "fly"]


def _synthetic(kind: str, n_sentences: int = 24, seed: int = 0) -> TaskData:
    """Label = a word's identity class (word), the dependent's class (pair), or whether the
    sentence holds 'cat' (sentence): learnable by any encoder."""
    rng = np.random.default_rng(seed)
    sentences = tuple(tuple(rng.choice(WORDS, size=rng.integers(3, 7))) for _ in range(n_sentences))
    items, y = [], []
    for s, sent in enumerate(sentences):
        if kind == "word":
            for w, word in enumerate(sent):
                items.append((s, w))
                y.append(WORDS.index(word) % 3)
        elif kind == "pair":
            for w in range(1, len(sent)):
                items.append((s, 0, w))
                y.append(WORDS.index(sent[w]) % 3)
        else:
            items.append((s,))
            y.append(int("cat" in sent))
    n_labels = 2 if kind == "sentence" else 3
    return TaskData("synthetic", "train", sentences, np.asarray(items), np.asarray(y),
                    tuple(str(i) for i in range(n_labels)), kind)


@pytest.mark.parametrize("kind", ["word", "pair", "sentence"])
def test_small_bert_memorizes_a_synthetic_task(tiny_bert_dir, kind, tmp_path, store):
    train = _synthetic(kind)
    run = finetune(load_model(str(tiny_bert_dir)), {"train": train, "dev": train},
                   FinetuneSettings(epochs=40, learning_rate=3e-3, batch_size=8, n_snapshots=2),
                   store=store, probe_splits=(), root=tmp_path)
    assert run.dev_accuracy[-1] == 1.0  # the training set, evaluated after training
    assert run.losses[-5:].mean() < run.losses[:5].mean()


def test_bf16_autocast_trains_too_and_is_its_own_run(tiny_bert_dir, tmp_path, store):
    train = _synthetic("word")
    runs = {a: finetune(load_model(str(tiny_bert_dir)), {"train": train, "dev": train},
                        FinetuneSettings(epochs=40, learning_rate=3e-3, batch_size=8, n_snapshots=2,
                                         autocast=a), store=store, probe_splits=(), root=tmp_path)
            for a in (None, "bf16")}
    assert runs["bf16"].dev_accuracy[-1] == 1.0
    assert runs["bf16"].key != runs[None].key
    assert not np.array_equal(runs["bf16"].losses, runs[None].losses)  # bf16 arithmetic differs


def test_same_seed_gives_bit_identical_weights(tiny_bert_dir, tmp_path, store):
    from safetensors.torch import load_file

    train = {"train": _synthetic("word")}

    def weights(seed, root):
        run = finetune(load_model(str(tiny_bert_dir)), train,
                       FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, seed=seed,
                                        n_snapshots=2), store=store, probe_splits=(), root=root)
        return load_file(str(run.folder / "final" / "model.safetensors"))

    a, b, c = weights(3, tmp_path / "a"), weights(3, tmp_path / "b"), weights(4, tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("learning_rate", -1e-5, "learning_rate must be > 0"),
    ("epochs", 0, "epochs must be a whole number >= 1"),
    ("epochs", 2.5, "epochs must be a whole number >= 1, got 2.5"),
    ("epochs", True, "epochs must be a whole number >= 1, got True"),
    ("epochs", "10", "epochs must be a whole number >= 1, got '10'"),
    ("warmup", 1.0, r"warmup must be in \[0, 1\)"),
    ("max_grad_norm", 0.0, "max_grad_norm must be > 0 or None"),
    ("autocast", "fp8", "autocast must be None"),
])
def test_bad_settings_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        FinetuneSettings(**{field: value}).validate()


def test_more_snapshots_than_steps_is_refused(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path))
    train = _synthetic("sentence", n_sentences=8)
    with pytest.raises(ValueError, match=r"n_snapshots=50 is larger than the 2 training steps"):
        finetune(load_model(str(tiny_bert_dir)), {"train": train},
                 FinetuneSettings(epochs=1, batch_size=4, n_snapshots=50), probe_splits=())


def _splits(kind="word"):
    return {"train": _synthetic(kind, 24, 0), "dev": _synthetic(kind, 8, 1),
            "test": _synthetic(kind, 8, 2)}


def test_by_default_the_whole_training_set_is_followed_at_every_snapshot(tiny_bert_dir, tmp_path, store):
    """The papers follow the whole training set along fine-tuning: by default the trajectory
    set is the training split itself, stored at every snapshot, and the test set is kept at
    the ends only."""
    splits = _splits()
    settings = FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, n_snapshots=3)
    run = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store, root=tmp_path)
    assert run.trajectory_items is None and run.trajectory_set(splits["train"]) is splits["train"]
    X = [run.representations(splits["train"], step, store=store) for step in run.steps]
    assert all(x.shape == (3, splits["train"].n_items, 32) for x in X)
    assert not np.allclose(X[0][-1], X[1][-1])
    with pytest.raises(LookupError, match="not in the store"):
        run.representations(splits["test"], int(run.steps[1]), store=store)
    from ftgeo.finetune import ChapterFinetuning

    assert ChapterFinetuning().trajectory_items is None


def test_run_stores_snapshots_and_is_a_cache_hit_the_second_time(tiny_bert_dir, tmp_path, store):
    from ftgeo import extract

    splits = _splits()
    settings = FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, n_snapshots=4)
    model = load_model(str(tiny_bert_dir))
    pretrained = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    run = finetune(model, splits, settings, store=store, root=tmp_path, trajectory_items=20)
    assert all(torch.equal(v, pretrained[k]) for k, v in model.encoder.state_dict().items()), \
        "fine-tuning must train a copy and leave the caller's model as it was"
    assert run.steps.tolist() == [0, 2, 4, 6] and len(run.dev_accuracy) == 4
    assert len(run.losses) == run.n_steps == 6
    assert (run.folder / "final" / "model.safetensors").exists()
    # the training set's trajectory set is in the store at every snapshot, and moves along
    # the trajectory; the test set's trajectory set and the full sets are kept at the first
    # and last step only
    before = dict(extract.COUNTERS)
    train_sample = run.trajectory_set(splits["train"])
    assert train_sample.n_items <= 20 < splits["train"].n_items
    X = [run.representations(train_sample, step, store=store) for step in run.steps]
    assert all(x.shape == (3, train_sample.n_items, 32) for x in X)
    assert all(not np.allclose(a[-1], b[-1]) for a, b in zip(X, X[1:], strict=False))
    test_sample = run.trajectory_set(splits["test"])
    assert test_sample.n_items < splits["test"].n_items
    ends = [run.representations(test_sample, step, store=store) for step in (0, 6)]
    assert all(x.shape == (3, test_sample.n_items, 32) for x in ends)
    with pytest.raises(LookupError, match="not in the store"):
        run.representations(test_sample, 2, store=store)
    full_first = run.representations(splits["train"], 0, store=store)
    full_last = run.representations(splits["train"], 6, store=store)
    assert full_first.shape[1] == full_last.shape[1] == splits["train"].n_items
    with pytest.raises(LookupError, match="not in the store"):
        run.representations(splits["train"], 2, store=store)
    with pytest.raises(ValueError, match="step 3 is not a snapshot"):
        run.representations(train_sample, 3, store=store)
    # step 0 is the pretrained model: the same vectors as a plain extraction
    np.testing.assert_array_equal(full_first, extract.representations(model, splits["train"],
                                                                      store=store))
    assert extract.COUNTERS["forward_batches"] == before["forward_batches"]
    # the final weights reload: same vectors (from the store) and the same dev accuracy
    final = run.load_model()
    np.testing.assert_allclose(extract.representations(final, splits["train"], store=False),
                               full_last, atol=1e-5)
    from ftgeo.extract import encode
    from ftgeo.finetune import accuracy, make_batches

    dev = splits["dev"]
    batches = make_batches(dev, encode(final.tokenizer, dev.sentences), 0, 8, None)
    assert accuracy(run.load_task_model(), batches) == run.dev_accuracy[-1]
    before = dict(extract.COUNTERS)
    again = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                     root=tmp_path, trajectory_items=20)
    np.testing.assert_array_equal(again.losses, run.losses)
    assert extract.COUNTERS == before


def test_same_seed_gives_bit_identical_snapshots(tiny_bert_dir, tmp_path):
    from ftgeo import Store

    splits = _splits("pair")
    settings = FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, n_snapshots=3)

    def snapshots(name):
        store = Store(tmp_path / name / "cache")  # separate stores: nothing is shared
        run = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                       root=tmp_path / name, trajectory_items=30)
        out = [run.representations(run.trajectory_set(splits["train"]), int(step), store=store)
               for step in run.steps]
        return out + [run.representations(splits["test"], run.final_step, store=store)]

    a, b = snapshots("a"), snapshots("b")
    assert len(a) == len(b) == 4
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_interrupted_run_resumes_to_the_same_final_weights(tiny_bert_dir, tmp_path, store,
                                                            monkeypatch, after_step):
    from safetensors.torch import load_file

    from ftgeo import finetune as ft

    monkeypatch.setattr(ft, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint at every snapshot

    splits = _splits("pair")
    settings = FinetuneSettings(epochs=3, learning_rate=1e-3, batch_size=8, n_snapshots=4)
    whole = ft.finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                              root=tmp_path / "a")

    def interrupt(step):
        if step == 5:
            raise KeyboardInterrupt

    after_step(interrupt)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                    root=tmp_path / "b")
    folder_b = next((tmp_path / "b" / "finetune").iterdir())
    assert (folder_b / "checkpoint.pt").exists() and not (folder_b / "result.json").exists()
    trained, loads = [], []
    after_step(trained.append)
    original_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("map_location"))
                        or original_load(*a, **k))
    resumed = ft.finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                          root=tmp_path / "b")
    after_step(None)
    # read onto the CPU, whatever device wrote it: the RNG states must be CPU tensors, and
    # the optimizer moves its state to the weights' device itself
    assert loads == ["cpu"]
    # 9 steps, snapshots at 0, 3, 6, 9: killed after step 5, resumed from the step-3 checkpoint
    assert whole.n_steps == 9 and trained == [4, 5, 6, 7, 8, 9]
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    a = load_file(str(whole.folder / "final" / "model.safetensors"))
    b = load_file(str(resumed.folder / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_defaults_are_the_papers_and_clip_only_when_asked(tiny_bert_dir, tmp_path, store,
                                                              monkeypatch):
    """Zhou & Srikumar (2022): Adam without weight decay, 3e-4, 10% warm-up, batch 32, 10
    epochs, no clipping; clipping happens once per step when max_grad_norm is set."""
    d = FinetuneSettings()
    assert (d.learning_rate, d.weight_decay, d.warmup, d.batch_size, d.epochs, d.max_grad_norm) == \
        (3e-4, 0.0, 0.1, 32, 10, None)
    norms = []
    original = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm, **kw: norms.append(max_norm)
                        or original(params, max_norm, **kw))
    splits = _splits("sentence")
    finetune(load_model(str(tiny_bert_dir)), splits, FinetuneSettings(epochs=1, batch_size=8, n_snapshots=2),
             store=store, root=tmp_path)
    assert norms == []
    run = finetune(load_model(str(tiny_bert_dir)), splits,
                   FinetuneSettings(epochs=1, batch_size=8, n_snapshots=2, max_grad_norm=0.5),
                   store=store, root=tmp_path)
    assert norms and set(norms) == {0.5} and len(norms) == run.final_step


def test_changing_a_setting_makes_a_new_run(tiny_bert_dir, tmp_path, store):
    splits = _splits("sentence")
    a = finetune(load_model(str(tiny_bert_dir)), splits,
                       FinetuneSettings(epochs=1, batch_size=8, n_snapshots=2), store=store,
                       root=tmp_path)
    b = finetune(load_model(str(tiny_bert_dir)), splits,
                       FinetuneSettings(epochs=1, batch_size=8, n_snapshots=2, seed=1),
                       store=store, root=tmp_path)
    assert a.key != b.key and a.folder != b.folder and a.folder.exists()


def test_command_line_refuses_bad_settings_by_name():
    import subprocess
    import sys

    for args, message in ((["--task", "ner"], "unknown task 'ner'"),
                          (["--task", "pos", "--learning-rate", "0"], "learning_rate must be > 0"),
                          (["--task", "pos", "--epochs", "0"], "epochs must be a whole number")):
        proc = subprocess.run([sys.executable, "-m", "ftgeo", "finetune", *args],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["word", "pair", "sentence"])
def test_dropping_top_layers_equals_a_truncated_model(tiny_bert_dir, kind, tmp_path, store):
    """accuracy_dropping_layers reads layer L - k from one forward pass; a model truncated to
    its first L - k layers with the same weights and head must give the same predictions."""
    import copy

    from ftgeo.extract import encode
    from ftgeo.finetune import _logits, accuracy, accuracy_dropping_layers, make_batches

    train = _synthetic(kind)
    run = finetune(load_model(str(tiny_bert_dir)), {"train": train, "dev": train},
                   FinetuneSettings(epochs=3, learning_rate=3e-3, batch_size=8, n_snapshots=2),
                   store=store, probe_splits=(), root=tmp_path)
    loaded = run.load_model()
    model = run.load_task_model(loaded)
    batches = make_batches(train, encode(loaded.tokenizer, train.sentences), 0, 8, None)
    by_k = accuracy_dropping_layers(model, batches)
    n_layers = model.encoder.config.num_hidden_layers
    assert by_k.shape == (n_layers + 1,)
    assert by_k[0] == accuracy(model, batches) == run.dev_accuracy[-1]
    np.testing.assert_array_equal(run.evaluate_dropping(train), by_k)
    for k in range(1, n_layers + 1):
        truncated = copy.deepcopy(model)
        truncated.encoder.encoder.layer = truncated.encoder.encoder.layer[: n_layers - k]
        with torch.inference_mode():
            right = sum(int((_logits(truncated, b).argmax(-1) == b.y).sum()) for b in batches)
        assert by_k[k] == right / train.n_items
        with torch.inference_mode():
            full, cut = _logits(model, batches[0]), _logits(truncated, batches[0])
        assert not torch.allclose(full, cut), "the truncated model must differ from the whole one"


# -- reading finished runs for the chapters -------------------------------------------------
def _fake_run(task, *, steps=(0, 5, 10), n_steps=10, epochs=2, timing=None, trajectory_items=None):
    """A finished run's record without weights: enough for the tables and the record."""
    from pathlib import Path

    from ftgeo.finetune import FinetuneRun

    return FinetuneRun("key", Path(f"{task}-key"), task, np.asarray(steps),
                       np.linspace(0.2, 0.9, len(steps)), np.zeros(n_steps), n_steps,
                       FinetuneSettings(epochs=epochs), {}, trajectory_items, timing or {})


def test_state_steps_and_the_tables_of_runs():
    from ftgeo.finetune import runs_table, state_steps, timing_table

    data = {"pos": _splits("word"), "dep": _splits("pair")}
    runs = {"pos": _fake_run("pos", trajectory_items=10, timing={"train_s": 3.0, "snapshot_s": 1.0,
                                                                 "total_s": 4.0}),
            "dep": _fake_run("dep", steps=(0, 4, 8, 12), n_steps=12)}
    assert state_steps(runs["dep"]) == {"pretrained": 0, "finetuned": 12}
    table = runs_table(runs, data)
    assert list(table.index) == ["pos", "dep"] and table.index.name == "task"
    assert table.loc["dep"].tolist() == [3, data["dep"]["train"].n_items, 12, 4,
                                         data["dep"]["train"].n_items]
    pos = table.loc["pos"]
    assert pos["trajectory items"] == data["pos"]["train"].sample(10).n_items <= 10
    timing = timing_table(runs)
    assert timing.loc["pos"].tolist() == [3.0, 1.0, 4.0]
    assert timing.loc["dep"].isna().all()  # a run that did not record its time


def _layers(dev, test):
    from ftgeo.probes import LayerProbeResult

    return LayerProbeResult(np.asarray(test, float), np.asarray(dev, float), np.ones(len(dev)))


def test_comparison_chooses_the_best_layer_on_dev_and_the_summary_counts_gains():
    from ftgeo.finetune import comparison_table, gain_summary

    probe = {("pos", "pretrained"): _layers([0.5, 0.8, 0.6], [0.4, 0.7, 0.9]),
             ("pos", "finetuned"): _layers([0.5, 0.6, 0.9], [0.5, 0.6, 0.95]),
             ("dep", "pretrained"): _layers([0.3, 0.2, 0.1], [0.3, 0.2, 0.1]),
             ("dep", "finetuned"): _layers([0.3, 0.2, 0.4], [0.3, 0.2, 0.35])}
    model_accuracy = {"pos": {"dev": 0.85, "test": 0.75}, "dep": {"dev": 0.25, "test": 0.2}}
    table = comparison_table(model_accuracy, probe)
    assert list(table.index) == ["pos", "dep"] and table.index.name == "task"
    pos = table.loc["pos"]
    # layer 1 is best on dev: its test accuracy (0.7) is the baseline, not the best on test (0.9)
    assert pos["linear probe pretrained, best layer, dev"] == 0.8
    assert pos["linear probe pretrained, best layer, test"] == 0.7
    assert pos["linear probe pretrained, last layer, test"] == 0.9
    assert pos["linear probe finetuned, last layer, test"] == 0.95
    assert pos["finetuned model, dev"] == 0.85 and pos["finetuned model, test"] == 0.75
    s = gain_summary(table)
    # gains over the last layer: pos -0.15, dep +0.1; over the best layer: pos +0.05, dep -0.1
    assert (s["n_beats_last"], s["n_beats_best"]) == (1, 1)
    assert s["mean_gain_last"] == pytest.approx(-0.025) and s["mean_gain_best"] == pytest.approx(-0.025)
    assert (s["largest_gain_task"], s["smallest_gain_task"], s["not_helped"]) == ("dep", "dep", "dep")
    assert s["largest_gain"] == pytest.approx(0.1) and s["smallest_gain"] == pytest.approx(-0.1)
    better = gain_summary(comparison_table({t: {"dev": 1.0, "test": 1.0} for t in model_accuracy}, probe))
    assert (better["n_beats_best"], better["not_helped"]) == (2, "none")


def test_finetuning_tasks_make_a_record_that_fits_the_schema(tmp_path):
    from ftgeo import results
    from ftgeo.finetune import finetuning_tasks

    runs = {"pos": _fake_run("pos", timing={"total_s": 4.0})}
    probe = {("pos", "pretrained"): _layers([0.5, 0.8], [0.4, 0.7]),
             ("pos", "finetuned"): _layers([0.5, 0.9], [0.5, 0.95])}
    tasks = finetuning_tasks(runs, {"pos": {"dev": 0.85, "test": 0.75}}, probe)
    assert tasks["pos"] == results.FinetuningTask("pos-key", 10, [0, 5, 10], [0.2, 0.55, 0.9], 0.85, 0.75,
                                                  [0.4, 0.7], [0.5, 0.95], 4.0)
    record = results.FinetuningRecord(model="m", fingerprint="f", model_info=results.ModelInfo("bert", 1, 2),
                                      encoder="e", trajectory_items=None, tasks=tasks)
    assert results.read_record(results.write_record(tmp_path, record)) == record


def test_trajectory_and_state_representations_read_the_stored_states(tiny_bert_dir, tmp_path, store):
    import inspect

    from ftgeo import extract
    from ftgeo.finetune import iter_state_representations, trajectory

    splits = _splits()
    model = load_model(str(tiny_bert_dir))
    run = finetune(model, splits, FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, n_snapshots=3),
                   store=store, root=tmp_path, trajectory_items=20)
    sample = run.trajectory_set(splits["train"])
    X = trajectory(run, sample, store=store)
    assert X.shape == (3, sample.n_items, 32)
    for k, step in enumerate(run.steps):
        np.testing.assert_array_equal(X[k], run.representations(sample, step, store=store)[-1])
    np.testing.assert_array_equal(trajectory(run, sample, layer=1, store=store)[-1],
                                  run.representations(sample, run.final_step, store=store)[1])
    states = iter_state_representations(model, {"synthetic": run}, {"synthetic": splits}, store=store)
    assert inspect.isgenerator(states)  # lazy: one state's vectors at a time
    (key0, before), (key1, after) = states
    assert (key0, key1) == (("synthetic", "pretrained"), ("synthetic", "finetuned"))
    assert set(before) == set(after) == {"train", "dev", "test"}
    np.testing.assert_array_equal(before["train"],
                                  extract.representations(model, splits["train"], store=store))
    np.testing.assert_array_equal(after["test"],
                                  run.representations(splits["test"], run.final_step, store=store))
    assert not np.allclose(before["test"][-1], after["test"][-1])
    last = dict(iter_state_representations(model, {"synthetic": run}, {"synthetic": splits}, layer=-1,
                                           store=store))
    np.testing.assert_array_equal(last["synthetic", "finetuned"]["dev"], after["dev"][-1])


def test_a_dev_sample_between_the_ends_changes_only_those_points_and_the_key(tiny_bert_dir, tmp_path,
                                                                            store, monkeypatch):
    """snapshot_dev_items: the first and last dev accuracy read the whole dev split, those in
    between a seeded sample; a sample as large as the split is no sample (the same run)."""
    from ftgeo import finetune as ft

    splits = {"train": _synthetic("sentence", 24, 0), "dev": _synthetic("sentence", 16, 1)}
    settings = FinetuneSettings(epochs=2, batch_size=8, n_snapshots=4)
    seen = []
    real = ft.accuracy

    def counting(model, batches):
        seen.append(sum(len(b.y) for b in batches))
        return real(model, batches)

    monkeypatch.setattr(ft, "accuracy", counting)
    whole = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store, root=tmp_path,
                     probe_splits=())
    assert seen == [16] * 4
    seen.clear()
    sampled = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                       root=tmp_path, probe_splits=(), snapshot_dev_items=5)
    assert seen == [16, 5, 5, 16]
    assert sampled.key != whole.key
    np.testing.assert_array_equal(sampled.losses, whole.losses)  # training is the same
    assert sampled.dev_accuracy[[0, -1]].tolist() == whole.dev_accuracy[[0, -1]].tolist()
    same = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store, root=tmp_path,
                    probe_splits=(), snapshot_dev_items=16)
    assert same.key == whole.key
    with pytest.raises(ValueError, match="snapshot_dev_items must be a whole number >= 1"):
        finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store, root=tmp_path,
                 probe_splits=(), snapshot_dev_items=0)


def test_a_run_that_follows_no_split_keeps_only_the_ends_and_has_its_own_key(tiny_bert_dir,
                                                                             tmp_path, store):
    """trajectory_splits=() (the GLUE runs' default in the chapters): the trajectory sets are
    stored at the first and last snapshot only, and the run is not the one that follows the
    training set."""
    from ftgeo.finetune import ChapterFinetuning

    splits = _splits("sentence")
    settings = FinetuneSettings(epochs=2, batch_size=8, n_snapshots=3)
    follows = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                       root=tmp_path, trajectory_items=4)
    ends = finetune(load_model(str(tiny_bert_dir)), splits, settings, store=store,
                    root=tmp_path, trajectory_items=4, trajectory_splits=())
    assert ends.key != follows.key
    sample = ends.trajectory_set(splits["train"])
    middle = int(ends.steps[1])
    assert follows.representations(sample, middle, store=store).shape[1] == sample.n_items
    for step in (0, ends.final_step):
        assert ends.representations(sample, step, store=store).shape[1] == sample.n_items
    with pytest.raises(LookupError, match="not in the store"):
        ends.representations(sample, middle, store=store)
    with pytest.raises(ValueError, match="glue_trajectories must be true or false"):
        ChapterFinetuning.from_mapping({"glue_trajectories": "no"})
