"""``make course``: execute every notebook in its full setting and record how long each cell took.

Each notebook under ``notebooks/`` runs top to bottom in a fresh kernel, in the setting a
learner gets by default (``RISLIB_FAST`` unset), with the outputs written back into the
notebook together with the measured time in its ``**Run time.**`` paragraph (``--no-inplace``
keeps the files as they are). ``make test`` compares the text of the cells marked
``NBVAL_CHECK_OUTPUT`` in the fast setting: a notebook where one of them prints other text in
the full setting keeps its stored outputs. After the last cell the runner reads
the notebook's ``COURSE_METRICS`` dictionary, if it defines one (the final figures it wants
reported, e.g. the trained model's val mIoU beside the floor). It writes

* ``docs/course_times.json``: per notebook, the wall time, every cell's time and the metrics;
* ``docs/course_times.md``: the table the README quotes (time per notebook, its longest cell,
  its final figures) and the machine it ran on.

::

    python benchmarks/run_course.py                   # all notebooks, in place
    python benchmarks/run_course.py --only 06 07      # some of them
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from tqdm.auto import tqdm

from rislib.provenance import describe_device

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DOCS = ROOT / "docs"
PROBE = "import json as _json\nprint(_json.dumps(globals().get('COURSE_METRICS', {}), default=float))"


def _first_line(cell) -> str:
    for line in cell.source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line[:70]
    return cell.source.strip().splitlines()[0][:70] if cell.source.strip() else ""


def _text(cell) -> str:
    """What a code cell printed (its stream outputs)."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def run_notebook(path: Path, *, inplace: bool, timeout: int) -> dict:
    """Execute ``path`` cell by cell; ``{"seconds", "cells": [...], "metrics"}``."""
    nb = nbformat.read(path, as_version=4)
    stored = copy.deepcopy(nb)  # the outputs before this run
    resources = {"metadata": {"path": str(path.parent)}}  # notebooks run in their own folder
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources)
    cells, start = [], time.perf_counter()
    with client.setup_kernel():
        bar = tqdm(list(enumerate(nb.cells)), desc=path.stem, unit="cell", leave=False)
        for index, cell in bar:
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            client.execute_cell(cell, index)
            seconds = round(time.perf_counter() - t0, 2)
            cells.append({"index": index, "first_line": _first_line(cell), "seconds": seconds})
        seconds = time.perf_counter() - start
        nb.cells.append(nbformat.v4.new_code_cell(PROBE))  # read COURSE_METRICS, then drop the cell
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1, store_history=False)
        probe = nb.cells.pop()
    text = _text(probe).strip()
    metrics = json.loads(text.splitlines()[-1]) if text else {}
    kept = False
    if inplace:
        # Cells marked NBVAL_CHECK_OUTPUT are compared by `make test`, in the fast setting, with
        # the stored text: where one of them changed, the notebook keeps its stored outputs.
        changed = [i for i, (old, new) in enumerate(zip(stored.cells, nb.cells))
                   if "NBVAL_CHECK_OUTPUT" in new.source and _text(old) != _text(new)]  # fmt: skip
        kept = bool(changed)
        if kept:
            print(f"{path.name}: checked cells {changed} print other text in the full setting; "
                  "the stored outputs are kept", flush=True)  # fmt: skip
        written = stored if kept else nb
        stamp_run_time(written, seconds, time.strftime("%Y-%m-%d"))
        nbformat.write(written, path)
    return {"seconds": round(seconds, 1), "cells": cells, "metrics": metrics, "outputs_kept": inplace and kept}


RUN_TIME = re.compile(r"Full setting \(the default\):.*?on a GPU, not measured\.", re.DOTALL)


def stamp_run_time(nb: nbformat.NotebookNode, seconds: float, date: str) -> None:
    """Write the measured full-setting time into the notebook's ``**Run time.**`` paragraph
    (first cell), adding the paragraph where there is none."""
    took = f"{seconds / 60:.1f} minutes" if seconds >= 60 else f"{seconds:.0f} seconds"
    sentence = (f"Full setting (the default): {took} on a {os.cpu_count()}-core CPU (measured by `make course`\n"
                f"on {date}); on a GPU, not measured.")  # fmt: skip
    first = nb.cells[0]
    if RUN_TIME.search(first.source):
        first.source = RUN_TIME.sub(lambda _: sentence, first.source, count=1)
    else:
        first.source = first.source.rstrip() + f"\n\n**Run time.** {sentence}"


def markdown(record: dict) -> str:
    lines = [
        "# The course in its full setting: time per notebook",
        "",
        "Written by `make course` (`benchmarks/run_course.py`), which runs every notebook top to",
        "bottom in its full setting (the default a learner gets) in a fresh kernel and writes the",
        "outputs back into the notebooks.",
        "",
        f"Run on {record['date']}: {record['device']}, {record['threads']}. Total "
        f"{record['total_minutes']:.1f} minutes.",
        "",
        "| notebook | minutes | longest cell (seconds) | final figures |",
        "|---|---:|---|---|",
    ]
    for name, nb in record["notebooks"].items():
        longest = max(nb["cells"], key=lambda c: c["seconds"]) if nb["cells"] else None
        cell = f"`{longest['first_line']}` ({longest['seconds']:.0f})" if longest else ""
        cell = cell.replace("|", "\\|")
        figures = "; ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in nb["metrics"].items())
        lines.append(f"| {name} | {nb['seconds'] / 60:.1f} | {cell} | {figures or '—'} |")
    kept = [name for name, nb in record["notebooks"].items() if nb.get("outputs_kept")]
    if kept:
        lines += ["", f"{', '.join(kept)} keep the outputs of the fast setting: a cell that `make test` checks",
                  "prints other text in the full setting."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="notebook number prefixes (default: all)")
    p.add_argument("--no-inplace", action="store_true", help="do not write the outputs into the notebooks")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed for one cell")
    p.add_argument("--out", default=str(DOCS), help="folder of course_times.md and .json (default docs/)")
    a = p.parse_args(argv)
    os.environ.pop("RISLIB_FAST", None)  # the full setting
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if a.only:
        paths = [q for q in paths if any(q.name.startswith(prefix) for prefix in a.only)]
    if not paths:
        p.error(f"no notebook in {NOTEBOOKS} matches --only {a.only}")
    out = Path(a.out)
    json_path = out / "course_times.json"
    record = json.loads(json_path.read_text()) if a.only and json_path.is_file() else {"notebooks": {}}
    for path in tqdm(paths, desc="course", unit="notebook"):
        record["notebooks"][path.stem] = run_notebook(path, inplace=not a.no_inplace, timeout=a.timeout)
        print(f"{path.stem}: {record['notebooks'][path.stem]['seconds'] / 60:.1f} min", flush=True)
    record["notebooks"] = dict(sorted(record["notebooks"].items()))
    record.update(
        date=time.strftime("%Y-%m-%d"),
        device=describe_device("cpu"),
        threads=f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        python=platform.python_version(),
        command="python benchmarks/run_course.py " + " ".join(sys.argv[1:]),
        total_minutes=sum(nb["seconds"] for nb in record["notebooks"].values()) / 60,
    )
    out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=1) + "\n")
    (out / "course_times.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
