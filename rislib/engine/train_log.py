"""The training log: one row per logged step or validation, in ``log.jsonl`` and ``log.csv``.

A row is a flat dict with ``kind`` (``"train"`` or ``"val"``), ``step``, ``epoch`` and values
(``loss/<term>``, ``lr``, ``grad_norm``, ``samples_per_s``, ``elapsed_s``; or the validation
metrics). ``log.jsonl`` is appended as rows come (a crash loses at most the line being
written); ``log.csv`` is rewritten from all rows; TensorBoard scalars are optional.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["TrainLog", "LossWindow", "read_jsonl"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``log.jsonl`` (a line cut by a crash ends the read: everything before it is good)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


class TrainLog:
    """The rows of a run, kept in memory and (when ``write``, i.e. on rank 0) in ``out_dir``.

    Args:
        out_dir: the run folder.
        write: whether this process writes the files.
    """

    def __init__(self, out_dir: Path, *, write: bool) -> None:
        self.out_dir, self.write = out_dir, write
        self.rows: list[dict[str, Any]] = []
        self._tb: Any = None

    @property
    def jsonl_path(self) -> Path:
        return self.out_dir / "log.jsonl"

    def open_tensorboard(self) -> None:
        """Also write scalars to ``out_dir/tb`` (skipped quietly when tensorboard is missing)."""
        if not self.write:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tb"))
        except Exception:  # noqa: BLE001 - optional: tensorboard may not be installed
            self._tb = None

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if not self.write:
            return
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("kind", "step", "epoch") and isinstance(v, int | float):
                    self._tb.add_scalar(f"{row['kind']}/{k}", v, row["step"])

    def keep_until(self, step: int) -> None:
        """Resume: keep the rows up to ``step`` (later ones will be produced again)."""
        self.rows = [r for r in read_jsonl(self.jsonl_path) if r.get("step", 0) <= step]
        if self.write:
            with open(self.jsonl_path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.rows)

    def write_csv(self) -> None:
        """Rewrite ``log.csv`` with every row (columns in order of first appearance)."""
        if not self.write or not self.rows:
            return
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        with open(self.out_dir / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.rows)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class LossWindow:
    """Means of the step values (loss terms, gradient norm) since the last logged row."""

    def __init__(self, now: float) -> None:
        self.reset(now)

    def reset(self, now: float) -> None:
        """Start a new window at time ``now``."""
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.started = now

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1

    def row(self, *, step: int, epoch: int, lr: float, batch_size: int, now: float, elapsed: float) -> dict[str, Any]:
        """The ``kind="train"`` log row of the window: ``loss/<term>`` means, ``grad_norm``, samples/s."""
        n = self.steps
        row: dict[str, Any] = {"kind": "train", "step": step, "epoch": epoch, "lr": lr}
        row.update({f"loss/{k}": v / n for k, v in self.sums.items() if k != "grad_norm"})
        row["grad_norm"] = self.sums["grad_norm"] / n
        row["samples_per_s"] = n * batch_size / max(now - self.started, 1e-9)
        row["elapsed_s"] = elapsed
        return row
