"""dclib.pages: a page's shared parameters declared once, and a parameter the page does not take refused on the
page itself (papermill alone only warns on stderr and runs the page on its defaults)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from dclib.errors import InputError
from dclib.pages import SHARED, ExperimentSpec, check_parameters, page_parameters, parameter_cells, start_page

ROOT = Path(__file__).resolve().parents[1]
PARAMS = 'model = "embedded:digits"\nn_images = 8  # a comment\n'
START = "spec = start_page(globals())"


def test_parameter_cells_read_the_page_cell_and_what_papermill_injected():
    assert parameter_cells(["", PARAMS, START]) == (["model", "n_images"], [])
    assert parameter_cells(["", PARAMS, "# Parameters\nn_images = 3\nseed = 1\n", START]) == \
        (["model", "n_images"], ["n_images", "seed"])
    assert parameter_cells([START]) == ([], [])


def test_an_unknown_parameter_stops_in_one_line_naming_the_nearest():
    check_parameters(["model", "n_images"], ["n_images", "dtype"], SHARED)  # shared ones are taken
    with pytest.raises(InputError) as e:
        check_parameters(["model", "n_images"], ["n_image"], SHARED)
    message = str(e.value)
    assert "\n" not in message and "'n_image' (did you mean 'n_images'?)" in message and "seed" in message
    with pytest.raises(InputError, match="'dtype'"):  # a page that takes no shared parameter
        check_parameters(["verdict_dir"], ["dtype"])


def test_start_page_fills_the_shared_defaults_and_keeps_what_the_page_or_papermill_set(capsys):
    namespace = {"model": "embedded:digits", "n_images": 3, "batch_size": 500}
    history = ["", PARAMS + "batch_size = 500\n", "# Parameters\nn_images = 3\n", START]
    spec = start_page(namespace, history=history)
    assert spec == ExperimentSpec(model="embedded:digits", batch_size=500)
    assert {k: namespace[k] for k in SHARED} == {**SHARED, "batch_size": 500}
    namespace = {"model": "m"}
    start_page(namespace, shared=["seed"], history=["", "model = 'm'\n", START])
    assert set(namespace) == {"model", "seed"}
    with pytest.raises(InputError, match="'dtype'"):
        start_page({}, shared=["seed"], history=["", "model = 'm'\n", "# Parameters\ndtype = 'float16'\n", START])


def test_without_papermill_the_table_lists_the_variables_the_parameters_cell_set(monkeypatch):
    """nbval keeps no input history: the table then lists the page's variables (its parameters, right after the
    parameters cell), not IPython's names, modules or functions."""
    import numpy

    shown = []
    monkeypatch.setattr("dclib.pages._display_markdown", shown.append)
    namespace = {"In": [""], "_ih": [], "np": numpy, "model": "embedded:digits", "n_images": 8, "f": print}
    start_page(namespace, history=[""])
    table = shown[0]
    assert "| `model` | `'embedded:digits'` | |" in table and "| `n_images` | `8` | |" in table
    assert "`np`" not in table and "`In`" not in table and "`f`" not in table and "| `seed` | `0` | |" in table


def test_every_page_declares_what_it_takes_and_reads_the_shared_ones_from_one_place():
    """No page pastes a shared parameter at its default: the defaults live in ExperimentSpec only."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        following = nb.cells[nb.cells.index(cell) + 1]
        assert "start_page(globals()" in following.source, path.name  # right after it: see parameter_cells
        namespace: dict = {}
        exec(cell.source, namespace)
        pasted = [k for k, v in SHARED.items() if k in namespace and namespace[k] == v
                  and type(v) is type(namespace[k])]
        assert not pasted, (path.name, pasted)
        assert set(namespace) - {"__builtins__"} <= set(page_parameters(path)), path.name


def _papermill(page: str, params: dict, out: Path):
    import papermill

    env = {"DCLIB_RESULTS_DIR": str(out.parent / "results"), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return papermill.execute_notebook(str(ROOT / "notebooks" / f"{page}.ipynb"), str(out), parameters=params,
                                          kernel_name="python3", cwd=str(out.parent), progress_bar=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.timeout(300)
def test_a_page_given_a_parameter_it_does_not_take_says_so_on_the_page(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError):
        _papermill("quickstart", {"n_image": 3}, tmp_path / "typo.ipynb")
    nb = json.loads((tmp_path / "typo.ipynb").read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "InputError"
    assert "this page takes no parameter 'n_image' (did you mean 'n_images'?)" in errors[0]["evalue"]
    # a shared parameter the page's own cell does not list is taken, and the table on the page says it was set
    _papermill("reproduction_status", {"verdict_dir": str(tmp_path / "none")}, tmp_path / "status.ipynb")
    status = json.loads((tmp_path / "status.ipynb").read_text())
    shown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for c in status["cells"]
                    for o in c.get("outputs", []))
    assert "| `verdict_dir` |" in shown and "set for this run" in shown


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
