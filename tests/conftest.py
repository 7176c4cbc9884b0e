"""Shared fixtures. Tests run offline: HF_HUB_OFFLINE=1, and no progress bars."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["FTGEO_PROGRESS"] = "0"

import pytest  # noqa: E402

from ftgeo import data as ftdata  # noqa: E402


def data_available(*datasets: str) -> bool:
    """True when every file of the data sets is in the data directory (no download)."""
    try:
        for f in ftdata.FILES.values():
            if f.dataset in datasets:
                ftdata.data_file(f.dataset, f.name, download=False)
    except (FileNotFoundError, ValueError):
        return False
    return True


def toy_notebook(path, *cells: str) -> None:
    """Write a small parameterized notebook: a parameters cell (``value = 1``, ``output_dir``)
    and one code cell per entry of ``cells``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('value = 1  # a number\noutput_dir = "out"  # folder')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)


def needs_data(*datasets: str):
    return pytest.mark.skipif(not data_available(*datasets),
                              reason=f"data set(s) {datasets} not in the data directory")


@pytest.fixture(scope="session")
def minilm():
    """The packaged default model, loaded once."""
    from ftgeo import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A small random BERT built from a config and saved to a folder, with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ftgeo.models import resolve_model

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm").source)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def store(tmp_path):
    from ftgeo import Store

    return Store(tmp_path / "cache")


@pytest.fixture()
def after_step():
    """Set a hook that fine-tuning calls after every optimizer step (``after_step(fn)``); it
    is removed when the test ends."""
    from ftgeo import finetune as ft

    def install(hook):
        ft._AFTER_STEP["hook"] = hook

    yield install
    ft._AFTER_STEP["hook"] = None


def pytest_collection_modifyitems(session, config, items):
    """Tests marked ``after_goldens`` read what the golden notebooks (nbval items) wrote, so
    they run after them; the names of the goldens collected are kept for them."""
    from test_golden import GOLDENS_RUN

    goldens = {Path(str(item.fspath)).stem for item in items if str(item.fspath).endswith(".ipynb")}
    config.stash[GOLDENS_RUN] = goldens
    if goldens:  # the chapters only read fine-tuned runs: train the goldens' runs first (cached)
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "make_golden", Path(__file__).parent / "golden" / "make_golden.py")
        make_golden = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(make_golden)
        try:
            make_golden.prepare(goldens)
        except (FileNotFoundError, ftdata.DataNotFoundError) as err:  # the goldens then fail alone
            import warnings

            warnings.warn(f"the goldens' fine-tuned runs were not trained: {err}", stacklevel=1)
    late = [item for item in items if item.get_closest_marker("after_goldens")]
    items[:] = [item for item in items if not item.get_closest_marker("after_goldens")] + late
