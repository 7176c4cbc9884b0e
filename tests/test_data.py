"""Loaders: counts against the PROVENANCE.md files, format quirks, and errors that name the culprit."""

import urllib.error
from collections import Counter

import numpy as np
import pytest

from conftest import needs_data
from ftgeo import data as ftdata
from ftgeo.data import load_task, read_conllu, task_name


@needs_data("ud-english-pud")
def test_pud_counts_match_provenance():
    pos = load_task("pos")
    assert sum(len(d.sentences) for d in pos.values()) == 1000
    assert sum(d.n_items for d in pos.values()) == 21180
    assert sum(d.n_words for d in pos.values()) == 21180
    counts = Counter()
    for d in pos.values():
        counts.update(d.y_names.tolist())
    assert len(counts) == 17
    assert counts["NOUN"] == 4015 and counts["ADP"] == 2488 and counts["INTJ"] == 1


@needs_data("ud-english-pud")
def test_pud_split_is_seeded_disjoint_and_complete():
    a, b, c = load_task("pos", seed=0), load_task("pos", seed=0), load_task("pos", seed=1)
    assert a["test"].sentences == b["test"].sentences
    assert a["test"].sentences != c["test"].sentences
    assert [len(a[s].sentences) for s in ftdata.SPLITS] == [720, 80, 200]
    every = [s for split in ftdata.SPLITS for s in a[split].sentences]
    assert len(set(every)) == len(every) == 1000


@needs_data("ud-english-pud")
def test_dep_items_are_head_dependent_pairs_without_root_or_subtypes():
    dep = load_task("dep")
    n_sentences = sum(len(d.sentences) for d in dep.values())
    assert sum(d.n_items for d in dep.values()) == 21180 - n_sentences  # one root per sentence
    assert not any(":" in lab for lab in dep["train"].labels)
    assert "root" not in dep["train"].labels
    d = dep["train"]
    assert d.items.shape[1] == 3
    lengths = np.array([len(s) for s in d.sentences])[d.items[:, 0]]
    assert (d.items[:, 1:] < lengths[:, None]).all() and (d.items[:, 1:] >= 0).all()


@needs_data("streusle")
@pytest.mark.parametrize("task, n_labels", [("ps-role", 46), ("ps-fxn", 38)])
def test_streusle_counts_match_provenance(task, n_labels):
    splits = load_task(task)
    assert [splits[s].n_items for s in ftdata.SPLITS] == [4285, 433, 457]
    assert [len(splits[s].sentences) for s in ftdata.SPLITS] == [2725, 554, 535]
    assert [splits[s].n_words for s in ftdata.SPLITS] == [44811, 5396, 5381]
    assert len(splits["train"].labels) == n_labels
    assert all(lab.startswith("p.") for lab in splits["train"].labels)


@needs_data("streusle")
def test_role_and_function_label_the_same_tokens():
    role, fxn = load_task("ps-role"), load_task("ps-fxn")
    for s in ftdata.SPLITS:
        assert np.array_equal(role[s].items, fxn[s].items)
    differ = np.mean(role["train"].y_names != fxn["train"].y_names)
    assert differ == pytest.approx(1434 / 4285)  # construals, PROVENANCE.md


@needs_data("trec")
def test_trec_counts_and_the_non_utf8_byte():
    trec = load_task("trec-50")
    assert trec["train"].n_items + trec["dev"].n_items == 5452
    assert trec["test"].n_items == 500
    assert len(trec["train"].labels) == 50
    words = {w for s in trec["train"].sentences + trec["dev"].sentences for w in s}
    assert "sister" in words and "city" in words  # 0xF0 between them became a space
    assert not any("\ufffd" in w for w in words)


@needs_data("sst2")
def test_sst2_counts():
    sst = load_task("sst-2")
    assert sst["train"].n_items + sst["dev"].n_items == 67349
    assert sst["test"].n_items == 872
    assert sst["test"].label_counts() == {"negative": 428, "positive": 444}


@needs_data("mrpc")
def test_mrpc_counts_bom_and_stray_quotes():
    mrpc = load_task("mrpc")
    assert mrpc["train"].n_items + mrpc["dev"].n_items == 3668  # a quoting reader finds 3,571
    assert mrpc["test"].n_items == 408
    assert mrpc["test"].label_counts() == {"not_paraphrase": 129, "paraphrase": 279}
    assert mrpc["test"].second is not None and len(mrpc["test"].second) == 408


def test_task_names_and_unknown_task():
    assert task_name("PS_FXN") == "ps-fxn"
    with pytest.raises(ValueError, match=r"unknown task 'ner'.*known tasks: pos"):
        load_task("ner")


CONLLU = """# newdoc id = d1
# sent_id = s1
# text = I'm here.
# Checktree: a free-form comment that is not key = value
1-2\tI'm\t_\t_\t_\t_\t_\t_\t_\t_
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2\t'm\tbe\tAUX\tVBP\t_\t3\tcop\t_\t_
3\there\there\tADV\tRB\t_\t0\troot\t_\t_
3.1\t_\t_\t_\t_\t_\t_\t_\t_\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = s2
1\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
2\tnow\tnow\tADV\tRB\t_\t1\tadvmod:tmod\t_\t_

"""


def test_any_ud_treebank_via_conllu_override(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU * 5, encoding="utf-8")
    sents = read_conllu(path)
    assert len(sents) == 10 and sents[0].words == ("I", "'m", "here", ".")
    pos = load_task("pos", conllu=path, test_fraction=0.2)
    assert sum(d.n_items for d in pos.values()) == 30
    dep = load_task("dep", conllu={"train": path, "dev": path, "test": path})
    assert dep["train"].n_items == 5 * 4  # 3 + 1 non-root words per copy
    assert "advmod" in dep["train"].labels  # subtype dropped


def test_malformed_conllu_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conllu"
    lines = CONLLU.splitlines()
    lines[6] = "2\t'm\tbe\tAUX"  # too few columns, on line 7
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conllu:7: expected 10 tab-separated columns, found 4"):
        read_conllu(path)


def test_non_integer_head_names_the_line(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text(CONLLU.replace("\t3\tcop", "\tx\tcop"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conllu:7: HEAD 'x' is not an integer"):
        read_conllu(path)


def test_missing_data_file_names_the_file_and_ftgeo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("FTGEO_DATA", str(tmp_path))

    def offline(spec, target):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(ftdata, "_download", offline)
    with pytest.raises(ftdata.DataNotFoundError,
                       match=r"trec/train_5500\.label not found.*FTGEO_DATA"):
        load_task("trec-50")


def test_missing_file_without_a_download_source_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("FTGEO_DATA", str(tmp_path))
    with pytest.raises(ftdata.DataNotFoundError, match=r"mrpc/train\.tsv not found.*FTGEO_DATA"):
        load_task("mrpc")


def test_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FTGEO_DATA", str(tmp_path))
    bad = tmp_path / "trec" / "TREC_10.label"
    bad.parent.mkdir()
    bad.write_text("NUM:dist How far ?\n")
    with pytest.raises(ValueError, match=r"TREC_10\.label is not the expected version"):
        ftdata.data_file("trec", "TREC_10.label")


def test_malformed_tsv_row_names_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film \t1\nno label here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.tsv:3: expected 2 tab-separated fields, found 1"):
        ftdata._read_tsv(path, 2)


def test_head_keeps_items_of_kept_sentences_only(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU * 5, encoding="utf-8")
    pos = load_task("pos", conllu={"train": path, "dev": path, "test": path})["train"]
    small = pos.head(3)
    assert len(small.sentences) == 3 and small.n_items == 4 + 2 + 4
    assert small.labels == pos.labels
