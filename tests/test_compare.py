"""ftgeo.compare: one column per model set-up, read from the chapters' metrics.json files."""

import json
import math

import numpy as np
import pytest

from ftgeo import compare, results


def write_run(runs_dir, folder, record_or_dict):
    (runs_dir / folder).mkdir(parents=True)
    if isinstance(record_or_dict, dict):
        (runs_dir / folder / "metrics.json").write_text(json.dumps(record_or_dict))
    else:
        results.write_record(runs_dir / folder, record_or_dict)


INFO = results.ModelInfo("bert", 2, 128)


def head(model, fingerprint, max_sentences=0):
    return {"model": model, "fingerprint": fingerprint, "model_info": INFO, "max_sentences": max_sentences}


def probing(model, fingerprint, tasks, max_sentences=0):
    return results.ProbingRecord(
        **head(model, fingerprint, max_sentences),
        layer=-1,
        probe_grid={},
        directprobe_items=None,
        tasks={
            t: results.ProbingTask([a, a], [b, b], None, None, 0, 0, False, False)
            for t, (a, b) in tasks.items()
        },
    )


def linearity(model, fingerprint, tasks):
    return results.LinearityRecord(
        **head(model, fingerprint),
        layer=-1,
        directprobe_items=None,
        tasks={t: results.LinearityTask(n, a, b, None, None) for t, (a, b, n) in tasks.items()},
    )


def layers(model, fingerprint, tasks):
    return results.LayersRecord(
        **head(model, fingerprint),
        tasks={t: results.LayersTask([0], 3, [], sim, [], [], []) for t, sim in tasks.items()},
    )


def isotropy(model, fingerprint, tasks):
    return results.IsotropyRecord(
        **head(model, fingerprint),
        enhancement_evaluation="retrained probe",
        max_items=None,
        n_clusters=2,
        n_top=2,
        tasks={
            t: results.IsotropyTask(
                1, 10, {}, {}, {"pretrained": a, "finetuned": b}, {}, {}, {}, {}, "length", {}, {}, 1
            )
            for t, (a, b) in tasks.items()
        },
    )


def blocky(within):
    C = np.full((4, 4), 0.2)
    C[:2, :2] = C[2:, 2:] = within
    np.fill_diagonal(C, 1.0)
    return C.tolist()


def cka(model, fingerprint, tasks):
    return results.CKARecord(
        **head(model, fingerprint),
        debiased=False,
        max_items=None,
        tasks={
            t: results.CKATask([0, 1, 2, 3], blocky(a), blocky(b), [1.0] * 4, [0.9], 10)
            for t, (a, b) in tasks.items()
        },
    )


@pytest.fixture()
def runs(tmp_path):
    runs_dir = tmp_path / "runs"
    write_run(runs_dir, "03--minilm", probing("minilm", "fp-a", {"pos": (0.8, 0.9)}))
    write_run(runs_dir, "04--minilm", linearity("minilm", "fp-a", {"pos": (20, 10, 10)}))
    write_run(
        runs_dir, "03--tiny", probing("/tmp/models/tiny-bert", "fp-b", {"pos": (0.5, 0.7), "dep": (0.4, 0.3)})
    )
    write_run(runs_dir, "07--tiny", layers("/tmp/models/tiny-bert", "fp-b", {"pos": [0.9, 0.2]}))
    write_run(
        runs_dir,
        "03--tiny-smoke",
        probing("/tmp/models/tiny-bert", "fp-b", {"pos": (0.1, 0.2)}, max_sentences=20),
    )
    write_run(runs_dir, "10--models", {"chapter": "10_models", "models": ["minilm"]})  # not a chapter record
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
        "MLP probe accuracy",
        "DirectProbe clusters per label",
        "spatial similarity to pretrained",
    ]


def test_a_new_model_adds_a_column_and_data_sizes_stay_apart(runs):
    before = compare.comparison_table(runs)
    write_run(runs, "03--bert-mini", probing("prajjwal1/bert-mini", "fp-c", {"pos": (0.6, 0.8)}))
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
        write_run(runs, fp, isotropy("/x/tiny", fp, {"pos": (0.3, 0.1)}))
    assert set(compare.comparison_table(runs).model) == {"tiny [aaaaaaaa]", "tiny [bbbbbbbb]"}


def test_newest_run_of_a_chapter_wins(tmp_path):
    import os

    runs = tmp_path / "runs"
    for k, value in enumerate((0.5, 0.9)):
        write_run(runs, f"run{k}", cka("minilm", "fp", {"pos": (0.2, value)}))
        os.utime(runs / f"run{k}" / "metrics.json", (1000 + k, 1000 + k))
    after = compare.comparison_table(runs)["after"].tolist()
    assert after == [pytest.approx(compare._block_contrast(blocky(0.9)))] and after[0] > 0.3


def test_a_later_run_on_fewer_tasks_keeps_the_other_tasks(tmp_path):
    import os

    runs = tmp_path / "runs"
    write_run(runs, "all", cka("minilm", "fp", {"pos": (0.2, 0.5), "dep": (0.2, 0.6)}))
    write_run(runs, "pos-only", cka("minilm", "fp", {"pos": (0.2, 0.9)}))
    os.utime(runs / "all" / "metrics.json", (1000, 1000))
    os.utime(runs / "pos-only" / "metrics.json", (2000, 2000))
    table = compare.comparison_table(runs).set_index("task")
    assert table.loc["pos", "after"] == pytest.approx(compare._block_contrast(blocky(0.9)))
    assert table.loc["dep", "after"] == pytest.approx(compare._block_contrast(blocky(0.6)))


def test_errors_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs_dir"):
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
    assert shown == [
        "minilm: pretrained",
        "minilm: finetuned",
        "tiny-bert: pretrained",
        "tiny-bert: finetuned",
    ]
    grid = plotting.comparison_grid(table)
    assert len([ax for ax in grid.axes if ax.axison]) == 3
    with pytest.raises(ValueError, match="empty"):
        plotting.comparison_figure(table.iloc[:0])
    assert np.isfinite(table["after"]).all()


def test_a_record_that_does_not_fit_its_schema_is_skipped_with_a_warning(runs, caplog):
    write_run(
        runs,
        "03--renamed",
        {
            "chapter": "03_probing_performance",
            "schema": 1,
            "model": "minilm",
            "fingerprint": "fp-a",
            "tasks": {"pos": {"mlp_pretrained_mean": 0.8}},
        },
    )
    table = compare.comparison_table(runs)
    assert "missing field(s)" in caplog.text and "03--renamed" in caplog.text
    assert len(table[table.model == "minilm"]) == 2  # the valid runs still count
