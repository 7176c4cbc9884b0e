"""Any encoder by name: tiny random models of seven architectures, each with a tokenizer
trained on the fly (tests/tiny_models.py), saved to folders and loaded by path, go through
extraction and fine-tuning with no code change."""

import json

import numpy as np
import pytest
import torch

from ftgeo import Store, load_model
from ftgeo.extract import cls_vectors, encode, forward_batches, word_vectors
from ftgeo.finetune import FinetuneSettings, finetune
from ftgeo.models import accepts_token_types
from test_finetune import _synthetic
from tiny_models import ARCHITECTURES, MAX_LENGTH, build_tiny_model

SENTENCES = [["The", "cat", "sat", "on", "the", "mat", "."], ["Anna", "whispered", "quietly"],
             ["A", "café", "\u200b", "naïve", "😀", "dog"]]  # odd words: every one gets a vector


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny(request, tmp_path_factory):
    folder = build_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, load_model(str(folder))


def test_every_word_gets_its_own_tokens_and_the_first_token_is_the_sentence_token(tiny):
    arch, model = tiny
    encoded = encode(model.tokenizer, SENTENCES, max_length=model.max_length)
    first = model.tokenizer.cls_token_id if model.tokenizer.cls_token_id is not None \
        else model.tokenizer.bos_token_id
    for sentence, e in zip(SENTENCES, encoded, strict=True):
        assert e.input_ids[0] == first, arch
        assert sorted({w for w in e.word_ids if w >= 0}) == list(range(len(sentence))), arch
        assert e.word_ids[0] == -1 and e.word_ids[-1] == -1  # special tokens belong to no word
    positions = np.array([(s, w) for s, sent in enumerate(SENTENCES) for w in range(len(sent))])
    V = word_vectors(model, SENTENCES, positions)
    assert V.shape == (3, len(positions), 32) and np.isfinite(V).all()
    # a word's vector is the mean of its tokens' vectors at the last layer
    (index, H), = list(forward_batches(model, encoded[:1], hidden_states=True))
    rows = [k for k, w in enumerate(encoded[0].word_ids) if w == 1]
    np.testing.assert_allclose(V[-1, 1], H[-1, 0, rows].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_pairs_use_segment_ids_only_where_the_model_has_them(tiny):
    arch, model = tiny
    expects = arch in ("bert", "albert", "electra", "roberta")  # RoBERTa: one segment id, 0
    assert accepts_token_types(model.encoder) == expects, arch
    second = [["A", "dog", "ran"], ["Peter", "laughed"], ["Why", "?"]]
    X = cls_vectors(model, SENTENCES, second)
    assert X.shape == (3, 3, 32) and np.isfinite(X).all()
    (_, H), = list(forward_batches(model, encode(model.tokenizer, SENTENCES[:1], second[:1]),
                                   hidden_states=False))
    np.testing.assert_allclose(X[-1, 0], H[0, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_the_longest_sentence_is_the_one_the_model_and_tokenizer_both_take(tiny):
    arch, model = tiny
    assert model.max_length == MAX_LENGTH, arch  # RoBERTa and MPNet: 514 positions, 512 tokens
    words = ["cat"] * (MAX_LENGTH + 100)
    with pytest.raises(ValueError, match=f"sentence 0 has .* more than the model's {MAX_LENGTH}"):
        encode(model.tokenizer, [words], max_length=model.max_length)
    fits = ["cat"] * (MAX_LENGTH - 2)
    n = len(encode(model.tokenizer, [fits], max_length=model.max_length)[0].input_ids)
    assert n <= MAX_LENGTH
    word_vectors(model, [fits], np.array([[0, 0]]))  # runs: no position beyond the table


@pytest.mark.parametrize("kind", ["word", "pair", "sentence"])
def test_every_architecture_fine_tunes_each_item_kind(tiny, kind, tmp_path):
    arch, model = tiny
    train = _synthetic(kind, 16)
    store = Store(tmp_path / "cache")
    run = finetune(model, {"train": train, "dev": train},
                   FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, n_snapshots=2),
                   store=store, probe_splits=("train",), root=tmp_path)
    assert np.isfinite(run.losses).all(), arch
    final = run.representations(train, run.final_step, store=store)
    assert final.shape[:2] == (3, train.n_items) and np.isfinite(final).all()
    start = run.representations(train, 0, store=store)
    assert not torch.equal(torch.from_numpy(final), torch.from_numpy(start))



@pytest.mark.parametrize("arch", ["roberta", "mpnet"])
def test_a_hub_style_tokenizer_config_still_gives_word_starts_and_the_position_limit(
        arch, tmp_path):
    """Hub tokenizers often leave model_max_length unset (a huge placeholder) and RoBERTa's
    leaves add_prefix_space off: the length then comes from the positions (514, of which 2
    are reserved), and pre-split words are still tokenized as words that follow a space."""
    import json

    folder = build_tiny_model(arch, tmp_path / arch)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["model_max_length"] = int(1e30)
    if arch == "roberta":
        config["add_prefix_space"] = False
    config_file.write_text(json.dumps(config))
    model = load_model(str(folder))
    assert model.max_length == MAX_LENGTH
    assert model.tokenizer.model_max_length > 10**9  # the limit did not come from the tokenizer
    words = ["The", "cat", "sat"]
    (e,) = encode(model.tokenizer, [words], max_length=model.max_length)
    reference = load_model(str(build_tiny_model(arch, tmp_path / "as-built")))
    (r,) = encode(reference.tokenizer, [words], max_length=reference.max_length)
    assert e.input_ids == r.input_ids, arch


def _smoke_notebooks() -> list[dict]:
    """Every chapter with its golden smoke parameters (tests/golden/make_golden.py), one
    fine-tuning seed and three tasks (a word, a pair and a sentence task: every item kind)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "golden" / "make_golden.py"
    spec = importlib.util.spec_from_file_location("make_golden", path)
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    notebooks = []
    for name, params in golden.SMOKE.items():
        params = {k: v for k, v in params.items() if k not in ("output_dir", "runs_dir", "tasks")}
        if "finetune" in params:
            params["finetune"] = {**params["finetune"], "n_seeds": 1}
        if "max_sentences" in params:
            params["max_sentences"] = 8
        notebooks.append({"name": name, "parameters": params})
    return notebooks


def test_the_papers_config_runs_every_chapter_on_tiny_models_of_every_architecture(
        tmp_path, monkeypatch):
    """configs/paper.yaml with its five hub ids replaced by tiny local models (BERT, RoBERTa,
    ALBERT, DistilBERT, ELECTRA: each keeps its model's parameters) and DeBERTa-v2 and MPNet
    added: every chapter, the comparison and the scorecard run for every model, with no
    code change."""
    from pathlib import Path

    import yaml

    from ftgeo.pipeline import load_config, run_config

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("FTGEO_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FTGEO_PROGRESS", "0")
    paper = load_config(root / "configs" / "paper.yaml")
    folders = {a: str(build_tiny_model(a, tmp_path / "models" / a)) for a in ARCHITECTURES}
    models = [{"model": folders[a], "parameters": m["parameters"]}
              for a, m in zip(("bert", "roberta", "albert", "distilbert", "electra"),
                              paper["models"], strict=True)]
    models += [{"model": folders[a]} for a in ("deberta-v2", "mpnet")]
    assert [n["name"] for n in paper["notebooks"]] == [n["name"] for n in _smoke_notebooks()]
    config = {"name": "paper-tiny", "book": False, "models": models, "notebooks": _smoke_notebooks(),
              "notebook_dir": str(root / "notebooks"),
              "parameters": {**paper["parameters"], "tasks": ["pos", "dep", "trec-50"]}}
    path = tmp_path / "paper-tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = run_config(path, runs_dir=tmp_path / "runs", book_dir=tmp_path / "book")
    assert len(summary["executed"]) == 7 * len(config["notebooks"]) and not summary["skipped"]
    for folder in map(Path, summary["runs"]):
        assert (folder / "metrics.json").is_file(), folder
    # the comparison of the last model's run reads every model's chapters
    last = [Path(f) for f in summary["runs"] if Path(f).name.startswith("10_models")][-1]
    assert len(json.loads((last / "metrics.json").read_text())["models"]) == 7
