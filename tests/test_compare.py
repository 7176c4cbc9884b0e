"""ftgeo.compare: one column per model set-up, read from the chapters' metrics.json files."""

import json
import math

import numpy as np
import pytest

from ftgeo import compare


def write_run(runs_dir, folder, metrics):
    (runs_dir / folder).mkdir(parents=True)
    (runs_dir / folder / "metrics.json").write_text(json.dumps(metrics))


def chapter(name, model, fingerprint, tasks, max_sentences=0):
    return {"chapter": name, "model": model, "fingerprint": fingerprint,
            "max_sentences": max_sentences, "tasks": tasks}


@pytest.fixture()
def runs(tmp_path):
    runs_dir = tmp_path / "runs"
    write_run(runs_dir, "03--minilm", chapter("03_probing_performance", "minilm", "fp-a", {
        "pos": {"mlp_untuned_mean": 0.8, "mlp_finetuned_mean": 0.9}}))
    write_run(runs_dir, "04--minilm", chapter("04_linearity", "minilm", "fp-a", {
        "pos": {"clusters_untuned": 20, "clusters_finetuned": 10, "n_labels": 10}}))
    write_run(runs_dir, "03--tiny", chapter("03_probing_performance", "/tmp/models/tiny-bert", "fp-b", {
        "pos": {"mlp_untuned_mean": 0.5, "mlp_finetuned_mean": 0.7},
        "dep": {"mlp_untuned_mean": 0.4, "mlp_finetuned_mean": 0.3}}))
    write_run(runs_dir, "07--tiny", chapter("07_layers", "/tmp/models/tiny-bert", "fp-b", {
        "pos": {"final_similarity": [0.9, 0.2]}}))
    write_run(runs_dir, "03--tiny-smoke", chapter("03_probing_performance", "/tmp/models/tiny-bert",
                                                  "fp-b", {"pos": {"mlp_untuned_mean": 0.1,
                                                                   "mlp_finetuned_mean": 0.2}},
                                                  max_sentences=20))
    write_run(runs_dir, "10--models", {"chapter": "10_models", "models": ["minilm"]})  # no fingerprint
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / "metrics.json").write_text("{not json")
    return runs_dir


def test_one_column_per_model_with_before_after_and_change(runs):
    table = compare.comparison_table(runs)
    assert set(table["model"]) == {"minilm", "tiny-bert"}
    row = table[(table.model == "tiny-bert") & (table.task == "dep")].iloc[0]
    assert row.measure == "MLP probe accuracy"
    assert (row.before, row.after) == (0.4, 0.3) and row.change == pytest.approx(-0.1)
    clusters = table[table.measure == "DirectProbe clusters per label"].iloc[0]
    assert (clusters.model, clusters.before, clusters.after) == ("minilm", 2.0, 1.0)
    similarity = table[table.measure == "spatial similarity to pretrained"].iloc[0]
    assert math.isnan(similarity.before) and similarity.after == 0.2  # the last layer
    # measures in the documented order, a model with no run of a chapter has no row for it
    assert list(dict.fromkeys(table.measure)) == [
        "MLP probe accuracy", "DirectProbe clusters per label", "spatial similarity to pretrained"]


def test_a_new_model_adds_a_column_and_data_sizes_stay_apart(runs):
    before = compare.comparison_table(runs)
    write_run(runs, "03--bert-mini", chapter("03_probing_performance", "prajjwal1/bert-mini", "fp-c", {
        "pos": {"mlp_untuned_mean": 0.6, "mlp_finetuned_mean": 0.8}}))
    after = compare.comparison_table(runs)
    assert set(after.model) - set(before.model) == {"prajjwal1/bert-mini"}
    assert len(after) == len(before) + 1
    smoke = compare.comparison_table(runs, max_sentences=20)
    assert smoke["after"].tolist() == [0.2]
    both = compare.comparison_table(runs, max_sentences=None)
    assert {"tiny-bert (full data)", "tiny-bert (20 sentences)"} <= set(both.model)


def test_same_name_different_weights_are_told_apart(tmp_path):
    runs = tmp_path / "runs"
    for fp in ("aaaaaaaa1111", "bbbbbbbb2222"):
        write_run(runs, fp, chapter("08_isotropy", "/x/tiny", fp, {
            "pos": {"isoscore_pretrained": 0.3, "isoscore_fine-tuned": 0.1}}))
    assert set(compare.comparison_table(runs).model) == {"tiny [aaaaaaaa]", "tiny [bbbbbbbb]"}


def test_newest_run_of_a_chapter_wins(tmp_path):
    import os

    runs = tmp_path / "runs"
    for k, value in enumerate((0.5, 0.9)):
        write_run(runs, f"run{k}", chapter("09_cka", "minilm", "fp", {
            "pos": {"block_score_pretrained": 0.1, "block_score_finetuned": value}}))
        os.utime(runs / f"run{k}" / "metrics.json", (1000 + k, 1000 + k))
    assert compare.comparison_table(runs)["after"].tolist() == [0.9]


def test_a_later_run_on_fewer_tasks_keeps_the_other_tasks(tmp_path):
    import os

    runs = tmp_path / "runs"
    write_run(runs, "all", chapter("09_cka", "minilm", "fp", {
        "pos": {"block_score_pretrained": 0.1, "block_score_finetuned": 0.5},
        "dep": {"block_score_pretrained": 0.2, "block_score_finetuned": 0.6}}))
    write_run(runs, "pos-only", chapter("09_cka", "minilm", "fp", {
        "pos": {"block_score_pretrained": 0.1, "block_score_finetuned": 0.9}}))
    os.utime(runs / "all" / "metrics.json", (1000, 1000))
    os.utime(runs / "pos-only" / "metrics.json", (2000, 2000))
    table = compare.comparison_table(runs).set_index("task")
    assert table.loc["pos", "after"] == 0.9 and table.loc["dep", "after"] == 0.6


def test_errors_and_empty_folders(tmp_path):
    with pytest.raises(ValueError, match="runs_dir"):
        compare.comparison_table(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert compare.comparison_table(tmp_path / "empty").empty


def test_figures_have_one_menu_entry_per_measure(runs):
    import matplotlib

    matplotlib.use("Agg")
    from ftgeo import plotting

    table = compare.comparison_table(runs)
    fig = plotting.comparison_figure(table)
    menu = fig.layout.updatemenus[0].buttons
    assert [b.label for b in menu] == list(dict.fromkeys(table.measure))
    # each entry shows exactly the traces of its measure: both models' bars for the probe
    shown = [t.name for t, v in zip(fig.data, menu[0].args[0]["visible"], strict=True) if v]
    assert shown == ["minilm: pretrained", "minilm: fine-tuned", "tiny-bert: pretrained",
                     "tiny-bert: fine-tuned"]
    grid = plotting.comparison_grid(table)
    assert len([ax for ax in grid.axes if ax.axison]) == 3
    with pytest.raises(ValueError, match="empty"):
        plotting.comparison_figure(table.iloc[:0])
    assert np.isfinite(table["after"]).all()
