"""The chapter as a notebook over the pipeline's results, executed top to bottom.

`notebooks/04_mnist_basics.ipynb` is run by nbclient, on a kernel of this venv's Python, with its
working directory in a temporary DVC project where the pipeline has run for real: on the
synthetic 3s and 7s (two commits with results, then one `dvc exp run`, so both the commits side
by side and the experiments table have something to show), and on the real MNIST where
`../shared/data/mnist` is (one commit and the workspace), where the notebook's own cells assert
the book's figures. A cell that raises fails the test. The paired
`notebooks/04_mnist_basics.py` (jupytext percent format, for review) must hold the same cells.

Needs the `notebook` extra (`pip install -e '.[notebook]'`): skips with that reason without it,
fails without it in CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from dvc_fixtures import DvcProject

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_mnist_basics.ipynb"
PAIRED = ROOT / "notebooks" / "04_mnist_basics.py"
EXTRA = ("pandas", "matplotlib", "jinja2", "ipykernel", "nbclient", "nbformat", "jupytext")
MISSING = [m for m in EXTRA if importlib.util.find_spec(m) is None]
KERNEL = "mnist-basics-test"

pytestmark = pytest.mark.notebook


@pytest.fixture(autouse=True)
def notebook_extra() -> None:
    """Skip without the notebook extra; in CI (.ci/run installs it) its absence is a failure."""
    if MISSING:
        why = f"the notebook extra is not installed (no {', '.join(MISSING)})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} in CI: .ci/run must `pip install -e '.[notebook]'`")
        pytest.skip(f"{why}: pip install -e '.[notebook]'")


@pytest.fixture(scope="session")
def jupyter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A kernelspec that runs this interpreter (not whatever `python3` kernel a user has), and
    one matplotlib config dir for every run (its font cache is built once)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    (root / "mpl").mkdir()
    return {"JUPYTER_PATH": str(root), "MPLCONFIGDIR": str(root / "mpl")}


def execute(
    proj: DvcProject, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch, cwd: Path | None = None
):
    """Run the notebook with cwd = the project (or `cwd` in it), with the project's environment."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", dirs["JUPYTER_PATH"])  # read here, to find the kernel
    nb = nbformat.read(NOTEBOOK, as_version=4)
    path = str(cwd or proj.path)
    client = NotebookClient(
        nb, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": path}}
    )
    client.execute(env={**proj.env, "MPLCONFIGDIR": dirs["MPLCONFIGDIR"]})
    return nb


def tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"one cell tagged {tag!r} expected"
    return cells[0]


def html_of(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def text_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def check_common(nb) -> None:
    """The styled pixel DataFrame, the figures and the experiments table are in the outputs."""
    pixels = html_of(tagged(nb, "pixels"))
    assert "font-size: 6pt" in pixels and "background-color" in pixels, pixels[:500]
    assert pixels.count("<td") == 11 * 18  # im3_t[4:15, 4:22]
    experiments = html_of(tagged(nb, "experiments"))
    assert "<table" in experiments and "workspace" in experiments, experiments[:500]
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert pngs >= 5  # the 3, the ideal digits, the sigmoid, the curves, the weights
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_stored_without_outputs_and_paired() -> None:
    """The .ipynb is stored clean, and the jupytext .py holds the same cells."""
    import jupytext
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    paired = jupytext.read(PAIRED)

    def cells(n) -> list[tuple[str, str, list[str]]]:
        return [(c.cell_type, c.source, c.get("metadata", {}).get("tags", [])) for c in n.cells]

    assert cells(paired) == cells(nb), (
        "the .py and .ipynb differ: `jupytext --sync notebooks/04_mnist_basics.py`"
    )


def test_notebook_on_synthetic_pipeline(
    dvc_project_factory, synthetic_37: Path, jupyter_dirs, monkeypatch
) -> None:
    """Two commits with results and one experiment (the extra runs re-run evaluate only: cheap),
    run from the notebooks/ folder as JupyterLab does."""
    proj = dvc_project_factory([str(synthetic_37)])
    proj.dvc("repro")
    proj.commit("repro")
    proj.set_params(evaluate={"gallery": 9})
    proj.dvc("repro")
    proj.commit("gallery 9")
    proj.dvc("exp", "run", "-n", "gallery-4", "-S", "evaluate.gallery=4")
    # Where JupyterLab starts the kernel: the notebook's folder; the notebook finds the project.
    (proj.path / "notebooks").mkdir()
    nb = execute(proj, jupyter_dirs, monkeypatch, cwd=proj.path / "notebooks")
    check_common(nb)
    assert "real MNIST: False" in text_of(nb)
    experiments = html_of(tagged(nb, "experiments"))
    assert (
        "gallery-4" in experiments and "evaluate.gallery" in experiments
    )  # the param that differs
    side = html_of(tagged(nb, "commits"))
    assert "HEAD~1 (" in side and "evaluate.gallery" in side and "l1.accuracy" in side


@pytest.mark.realdata
def test_notebook_on_real_mnist(
    dvc_project_factory, real_mnist: Path, jupyter_dirs, monkeypatch
) -> None:
    """The book's figures, asserted by the notebook's own cells (0.9168 / 0.9854 / 0.9511...);
    the results left uncommitted: one commit, compared with the workspace."""
    proj = dvc_project_factory([str(real_mnist)])
    proj.dvc("repro")
    nb = execute(proj, jupyter_dirs, monkeypatch)
    check_common(nb)
    text = text_of(nb)
    assert "real MNIST: True" in text  # so the cells' asserts of the book's figures ran
    assert "accuracy on 3s 0.9168, on 7s 0.9854, mean 0.9511" in text
    assert "torch.Size([6131, 28, 28])" in text
    assert "one commit only" in text and "workspace" in html_of(tagged(nb, "commits"))
