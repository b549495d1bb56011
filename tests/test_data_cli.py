"""``python -m rislib data``: generation and split statistics through the command's own parser."""

from __future__ import annotations

import argparse
import json

import pytest

from rislib.data import cli, open_source


def run(argv):
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return cli.main(parser.parse_args(argv))


def test_refshapes_then_info(tmp_path, capsys):
    out = tmp_path / "data"
    argv = ["refshapes", "--out", str(out), "--size", "64", "--train", "4", "--val", "2", "--generalized",
            "--workers", "0", "--no-progress"]  # fmt: skip
    assert run(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == {"train": 4, "val": 2}
    src = open_source(out, "refshapes")
    assert src.splits() == ["train", "val"] and (out / "grefshapes" / "grefs(synth).json").is_file()
    assert run(["info", "--data", str(out), "--dataset", "refshapes", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"]["images"] == 4 and stats["train"]["refs"] == len(src.refs("train"))
    assert stats["val"]["sentences"] == sum(len(r["sentences"]) for r in src.refs("val"))
    assert run(["info", "--data", str(out), "--dataset", "grefshapes"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[1].split()[:2] == ["split", "images"] and "none" in table
    with pytest.raises(ValueError, match="unknown dataset"):
        run(["info", "--data", str(out), "--dataset", "nope"])


def test_all_counts_zero_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="every split count is 0"):
        run(["refshapes", "--out", str(tmp_path / "d"), "--train", "0", "--workers", "0", "--no-progress"])
    assert not (tmp_path / "d").exists()
