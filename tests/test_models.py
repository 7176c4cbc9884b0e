"""Model resolution: the packaged alias, a local folder, and errors that say what to do."""

import pytest
import torch

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


def test_the_device_is_resolved_and_a_missing_gpu_is_refused_by_name(monkeypatch):
    import torch

    from ftgeo._util import DEVICE_ENV, resolve_device

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")  # auto
    with pytest.raises(ValueError, match="'tpu' is not one of auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    monkeypatch.setenv(DEVICE_ENV, "cuda:x")
    with pytest.raises(ValueError, match=r"'cuda:x' \(from FTGEO_DEVICE\) is not one of"):
        resolve_device()
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU here; use --device cpu"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            load_model("minilm", device="cuda:1")


def test_the_cpus_fingerprints_are_unmarked_and_a_gpus_are_marked(tiny_bert_dir):
    from ftgeo.models import ModelSpec, on_device

    cpu = load_model(str(tiny_bert_dir), device="cpu")
    assert cpu.spec.fingerprint == model_fingerprint(str(tiny_bert_dir))  # as before devices
    assert next(cpu.encoder.parameters()).device.type == "cpu"
    spec = ModelSpec("m", "m", "abc", True)
    assert on_device(spec, "cpu") is spec and on_device(spec, "cuda:0").fingerprint == "abc@cuda"


def test_a_local_models_fingerprint_on_a_gpu_is_the_one_its_records_carry(tiny_bert_dir,
                                                                          monkeypatch):
    """model_fingerprint (the scorecard looks records up by it) follows the device, as
    load_model does: a GPU's records are found on a GPU, the CPU's on the CPU."""
    import ftgeo._util

    cpu = model_fingerprint(str(tiny_bert_dir))
    assert model_fingerprint(str(tiny_bert_dir), device="cpu") == cpu and "@" not in cpu
    monkeypatch.setattr(ftgeo._util, "resolve_device", lambda device=None: torch.device("cuda", 0))
    assert model_fingerprint(str(tiny_bert_dir)) == cpu + "@cuda"
