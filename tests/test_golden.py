"""The golden smoke runs check the notebooks as they are: same source cells, and records that
fit the schema of ftgeo.results."""

from pathlib import Path

import nbformat
import pytest

from ftgeo import results

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
GOLDENS = sorted(GOLDEN.glob("*.ipynb"))


def _cells(path: Path) -> list[tuple[str, str]]:
    nb = nbformat.read(path, as_version=4)
    return [
        (c.cell_type, c.source) for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])
    ]


@pytest.mark.parametrize("golden", GOLDENS, ids=[g.stem for g in GOLDENS])
def test_golden_has_the_source_cells_of_its_notebook(golden):
    source = ROOT / "notebooks" / golden.name
    assert source.is_file(), f"{golden.name} has no notebook in notebooks/"
    want, have = _cells(source), _cells(golden)
    stale = [i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b]
    assert len(want) == len(have) and not stale, (
        f"{golden.name} is stale: its cells differ from notebooks/{golden.name} (first at cell "
        f"{stale[0] if stale else min(len(want), len(have))}); regenerate it with "
        f"python tests/golden/make_golden.py {golden.stem}"
    )


def test_every_chapter_has_a_golden():
    assert {g.stem for g in GOLDENS} == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}


@pytest.mark.after_goldens
@pytest.mark.parametrize("chapter", results.CHAPTERS)
def test_golden_run_records_fit_the_schema(chapter, request):
    """The records the golden runs wrote in this session (nbval executes them earlier in the
    same pytest run; conftest orders this test after them)."""
    ran = request.config.stash.get(GOLDENS_RUN, set())
    if chapter not in ran:
        pytest.skip(f"the golden run of {chapter} did not execute in this pytest session")
    folder = GOLDEN / "_out" / chapter[:2]
    record = results.read_record(folder)  # raises SchemaError naming the field
    assert type(record).chapter == chapter and record.max_sentences == 20
    assert set(record.model_info.__dict__) == {"model_type", "n_layers", "hidden_size"}


GOLDENS_RUN = pytest.StashKey[set]()


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_sees_every_parameter_the_parameters_cell_assigns(notebook):
    """papermill drops a parameter whose line it cannot parse (an '=' inside its comment, for
    one): the config check and -p would then refuse or ignore a real parameter."""
    import ast
    import logging

    import papermill

    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    logging.getLogger("papermill").setLevel(logging.ERROR)
    assert list(papermill.inspect_notebook(str(notebook))) == assigned
