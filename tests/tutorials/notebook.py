"""Runs a tutorial notebook in quick mode, as the test suite does."""

import os

import papermill

from tests.testing import REPO_ROOT

TUTORIALS = os.path.join(REPO_ROOT, "tutorials")


def run_notebook(name, output_dir, **parameters):
    """Executes `tutorials/<name>` with papermill and `QUICK=True`.

    Args:
        name: the notebook's file name, e.g. `"01_feature_extraction_vs_fine_tuning.ipynb"`.
        output_dir: a folder for the executed copy (pytest's `tmp_path`).
        **parameters: extra values for the notebook's `parameters` cell.

    Returns:
        The executed notebook as a `nbformat` node. Cell outputs are in
        `nb.cells[i].outputs`; use `notebook_text(nb)` to search them.
    """
    parameters = {"QUICK": True, **parameters}
    output = os.path.join(str(output_dir), name)
    return papermill.execute_notebook(
        os.path.join(TUTORIALS, name),
        output,
        parameters=parameters,
        kernel_name="python3",
        cwd=TUTORIALS,
        progress_bar=False,
    )


def notebook_text(nb):
    """All text outputs (streams and plain-text results) of an executed notebook."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            data = out.get("data", {})
            if "text/plain" in data:
                parts.append(data["text/plain"])
    return "\n".join(parts)
