"""Data roots are only read: missing or incomplete ones are errors listing what is missing, RefShapes
is generated only on request, and the generator never overwrites an annotation file in place.

Issue item 3: ``train --data D`` with D lacking only ``refs(synth).p`` used to regenerate
24,000 images over D and overwrite ``instances.json``; a mistyped ``--data`` silently got a
fresh 757 MB data set.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import warnings
from pathlib import Path

import pytest

from rislib.data import DataRootError, check_data_root, generate_refshapes, missing_files, root_state
from rislib.engine import train_cli
from rislib.engine.train_cli import ensure_refshapes

COUNTS = {"train": 4, "val": 2}


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("complete")
    generate_refshapes(root, seed=0, size=64, counts=COUNTS, workers=0, progress=False)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_root_states_and_the_missing_list(complete, tmp_path):
    assert root_state(complete, "refshapes") == "complete" and missing_files(complete, "refshapes") == []
    check_data_root(complete, "refshapes")
    assert root_state(tmp_path / "nowhere", "refshapes") == "absent"
    with pytest.raises(DataRootError, match=r"nowhere: folder not found .*; generate it"):
        check_data_root(tmp_path / "nowhere", "refshapes", hint="generate it")
    partial = tmp_path / "partial"
    shutil.copytree(complete, partial)
    (partial / "refshapes" / "refs(synth).p").unlink()
    assert root_state(partial, "refshapes") == "incomplete"
    with pytest.raises(DataRootError, match=r"the refshapes data set is incomplete; missing .*refs\(synth\)\.p$"):
        check_data_root(partial, "refshapes")
    # other layouts: gRefCOCO's refs file may be JSON or a pickle; PhraseCut needs refer_<split>.json
    assert "grefs(unc).json or " in missing_files(tmp_path, "grefcoco")[1]
    assert [Path(m).name for m in missing_files(tmp_path, "phrasecut", "val")] == ["refer_val.json", "images"]
    with pytest.raises(DataRootError, match="holds no refcoco data set"):
        check_data_root(tmp_path, "refcoco")


def test_ensure_refshapes_generates_into_an_empty_root_only(complete, tmp_path):
    assert ensure_refshapes(complete, size=64, counts=COUNTS, verbose=False) is False
    fresh = tmp_path / "fresh"
    assert ensure_refshapes(fresh, size=64, counts={"val": 2}, verbose=False) is True
    assert root_state(fresh, "refshapes") == "complete"
    partial = tmp_path / "partial"
    shutil.copytree(complete, partial)
    (partial / "refshapes" / "refs(synth).p").unlink()
    before = {f: _sha(partial / f) for f in _files(partial)}
    with pytest.raises(DataRootError, match=r"incomplete; missing .*refs\(synth\)\.p; repair it, or regenerate"):
        ensure_refshapes(partial, size=64, counts=COUNTS, verbose=False)
    assert {f: _sha(partial / f) for f in _files(partial)} == before


def test_the_generator_keeps_identical_files_and_moves_different_ones_aside(tmp_path):
    generate_refshapes(tmp_path, seed=0, size=64, counts={"val": 2}, workers=0, progress=False)
    inst = tmp_path / "refshapes" / "instances.json"
    first = inst.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same data again: nothing moved, nothing to say
        generate_refshapes(tmp_path, seed=0, size=64, counts={"val": 2}, workers=0, progress=False)
    assert inst.read_bytes() == first and not list(inst.parent.glob("*.replaced-*"))
    with pytest.warns(UserWarning, match=r"instances.json: an existing file with other content was moved to"):
        generate_refshapes(tmp_path, seed=1, size=64, counts={"val": 2}, workers=0, progress=False)
    aside = list(inst.parent.glob("instances.json.replaced-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == first and inst.read_bytes() != first


def _train_args(data: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cli.configure(parser)
    return parser.parse_args(["--model", "xattn", "--recipe", "cpu", "--data", str(data), "--out", str(out),
                              "--set", "image_size=64", "--steps", "1", "--batch-size", "2", "--workers", "0",
                              "--val-split", "", "--no-progress", *extra])  # fmt: skip


def test_train_reads_the_data_root_and_never_writes_into_it(complete, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(complete, partial)
    (partial / "refshapes" / "refs(synth).p").unlink()
    before = {f: _sha(partial / f) for f in _files(partial)}
    with pytest.raises(DataRootError, match=r"incomplete; missing .*refs\(synth\)\.p; generate it with"):
        train_cli.main(_train_args(partial, tmp_path / "run"))
    with pytest.raises(DataRootError, match="incomplete"):  # --generate does not write over a partial root either
        train_cli.main(_train_args(partial, tmp_path / "run", "--generate", "--generate-counts", "train=4"))
    assert {f: _sha(partial / f) for f in _files(partial)} == before
    typo = tmp_path / "data_refshapes_typo"
    with pytest.raises(DataRootError, match="data_refshapes_typo: folder not found"):
        train_cli.main(_train_args(typo, tmp_path / "run"))
    assert not typo.exists() and not (tmp_path / "run").exists()
    with pytest.raises(DataRootError, match="only refshapes and grefshapes can be generated"):
        train_cli.main(_train_args(typo, tmp_path / "run", "--dataset", "refcoco", "--generate"))


def test_train_generate_fills_an_empty_root(tmp_path, capsys):
    data = tmp_path / "new_data"
    args = _train_args(data, tmp_path / "run", "--generate", "--generate-counts", "train=4,val=0")
    assert train_cli.main(args) == 0
    assert root_state(data, "refshapes") == "complete" and (tmp_path / "run" / "final.pt").is_file()
    assert "generating them (train 4, val 0" in capsys.readouterr().out
