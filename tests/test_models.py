"""Model resolution: the packaged alias, a local folder, and errors that say what to do."""

import pytest

from ftgeo.models import load_model, model_fingerprint, resolve_model


def test_alias_resolves_to_the_packaged_model():
    spec = resolve_model("minilm")
    assert spec.local and spec.source.endswith("model")
    assert spec.fingerprint == resolve_model("minilm").fingerprint


def test_local_folder_loads_with_all_hidden_states(tiny_bert_dir):
    model = load_model(str(tiny_bert_dir))
    assert model.n_layers == 3 and model.n_features == 32
    assert model.spec.local and model.spec.fingerprint == model_fingerprint(tiny_bert_dir)
    assert model.spec.fingerprint != resolve_model("minilm").fingerprint


def test_unknown_hub_id_says_it_is_not_available_locally():
    with pytest.raises(ValueError, match=r"'no-such-org/no-such-model' is not available locally.*"
                                         r"save_pretrained"):
        load_model("no-such-org/no-such-model")


def test_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"has no config\.json"):
        resolve_model(tmp_path)


def test_missing_local_path_is_refused():
    with pytest.raises(ValueError, match=r"no such folder"):
        resolve_model("./no/such/folder")
