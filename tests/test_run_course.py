"""``make course`` (benchmarks/run_course.py) on a two-cell notebook: the metrics it reads, the
run time it stamps, and stored outputs kept where a checked cell prints other text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def _run_course():
    spec = importlib.util.spec_from_file_location("run_course", ROOT / "benchmarks" / "run_course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(path: Path, checked_output: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A notebook\n\nText."),
        nbformat.v4.new_code_cell("COURSE_METRICS = {'val mIoU': 12.5}\nprint('hello')"),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)"),
    ]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text=checked_output)]
    nbformat.write(nb, path)


def test_run_notebook_reads_metrics_stamps_the_time_and_keeps_checked_outputs(tmp_path):
    rc = _run_course()
    same, other = tmp_path / "same.ipynb", tmp_path / "other.ipynb"
    _notebook(same, "42\n")
    _notebook(other, "41\n")
    result = rc.run_notebook(same, inplace=True, timeout=120)
    assert result["metrics"] == {"val mIoU": 12.5} and not result["outputs_kept"]
    assert [c["index"] for c in result["cells"]] == [1, 2]
    nb = nbformat.read(same, as_version=4)
    assert nb.cells[1].outputs[0]["text"] == "hello\n"  # written back
    assert "**Run time.** Full setting (the default):" in nb.cells[0].source
    assert len(nb.cells) == 3  # the metrics probe is not left behind
    result = rc.run_notebook(other, inplace=True, timeout=120)
    assert result["outputs_kept"]
    nb = nbformat.read(other, as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "41\n" and not nb.cells[1].outputs  # stored outputs kept
    assert "**Run time.**" in nb.cells[0].source
    table = rc.markdown({"date": "d", "device": "cpu", "threads": "t", "total_minutes": 0.1,
                         "notebooks": {"other": result}})  # fmt: skip
    assert "| other | 0.0 |" in table and "val mIoU: 12.5" in table and "other keep the outputs" in table
