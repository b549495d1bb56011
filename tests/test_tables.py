"""The papers' tables: published numbers against docs/, the renderer on fabricated
result files (Δ, like-with-like matching, protocol flags), the ablation bootstrap and verdicts,
and the ``tables`` command."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from rislib.tables import (
    ABLATION_CLAIMS,
    STANDARD_COLUMNS,
    compare,
    judge_claims,
    load_results,
    lookup,
    methods,
    paired_bootstrap,
    published,
    render_markdown,
    select,
)
from rislib.tables.ablations import (
    ABLATION_ROWS,
    ablation_studies,
    floor_miou,
    floor_results,
    group_ablation_results,
    results_markdown,
    row_name,
    verdicts_markdown,
)
from rislib.tables.figures import plot_ablations
from rislib.tables.results import ResultFileError, read_result

DOCS = Path(__file__).resolve().parents[1] / "docs"


# ---- the published numbers --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "dataset", "split", "metric", "kw", "expected"),
    [
        ("LTS", "refcoco", "val", "oIoU", {}, 65.43),
        ("LTS", "refcocog", "test", "oIoU", {}, 54.25),
        ("MagNet", "refcoco+", "testB", "oIoU", {}, 58.14),
        ("MagNet", "refcocog", "val", "oIoU", {"split_by": "google"}, 63.13),
        ("MagNet", "refcoco", "val", "oIoU", {"variant": "combined data"}, 76.55),
        ("MagNet", "refcocog", "test", "oIoU", {"variant": "combined data"}, 69.29),
        ("LAVT", "refcocog", "val", "mIoU", {"split_by": "google"}, 63.66),
        ("LAVT", "refcoco", "val", "oIoU", {}, 72.73),
        ("LAVT", "refcoco+", "testB", "P@0.9", {}, 27.24),
        ("ReLA", "grefcoco", "val", "gIoU", {}, 63.60),
        ("ReLA", "grefcoco", "testB", "cIoU", {}, 59.88),
        ("ReLA", "grefcoco", "val", "gIoU", {"variant": "Swin-T"}, 54.44),
        ("CRIS", "refcoco", "val", "mIoU*", {"variant": "R101"}, 70.47),
        ("CRIS", "refcoco+", "testB", "oIoU", {"variant": "R101, oIoU re-evaluated by SaFiRe"}, 48.42),
        ("VLT", "refcoco", "val", "oIoU", {"variant": "ICCV'21"}, 65.65),
        ("VLT", "refcocog", "test", "oIoU", {"variant": "TPAMI'22"}, 66.22),
        ("CARIS", "refcoco", "testA", "oIoU", {"variant": "reproduced by MaskRIS †"}, 77.63),
        ("LTS", "grefcoco", "testA", "cIoU", {"variant": "re-trained by GRES"}, 61.87),
        ("MattNet", "grefcoco", "val", "cIoU", {}, 47.51),
        ("ReLA", "grefcoco", "val", "cIoU", {"variant": "ResNet-50"}, 39.53),
        ("MagNet", "arefcoco", "n/r", "oIoU", {}, 54.4),
        ("MagNet", "arefcoco", "n/r", "P@0.9", {}, 29.9),
    ],
)
def test_spot_values_from_the_docs(method, dataset, split, metric, kw, expected):
    assert lookup(method, dataset, split, metric, **kw) == expected


def test_cells_the_sources_lack_stay_empty():
    assert lookup("LTS", "refcocog", "val", "oIoU", split_by="google") is None  # n/r in docs/methods/lts.md
    assert lookup("CRIS", "refcocog", "val", "mIoU*", variant="R101", split_by="google") is None  # "-"
    assert lookup("MagNet", "refcoco", "val", "mIoU") is None  # MagNet's mIoU table was not retrieved
    assert published(method="LTS", metric="mIoU") == []


def test_maris_and_haris_cells_exist_and_are_all_empty():
    for method in ("MARIS", "HARIS"):
        cells = published(method=method)
        assert len(cells) >= 9  # the eight RefCOCO-family columns + PhraseCut (+ gRefCOCO for MARIS)
        assert all(c.value is None and c.tag == "n/r" and c.metric == "n/r" for c in cells)
        assert {("refcoco", "val"), ("refcocog", "test")} <= {(c.dataset, c.split) for c in cells}
        assert any(c.dataset == "phrasecut" for c in cells)
    assert any(c.dataset == "grefcoco" for c in published(method="MARIS"))
    assert published(method="HARIS", dataset="phrasecut")[0].training == "zero-shot"


def test_every_cell_names_a_metric_a_source_and_a_tag():
    metrics = {"oIoU", "mIoU", "mIoU*", "cIoU", "gIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "n/r"}
    seen = set()
    for c in published():
        assert c.metric in metrics, c
        assert c.source and c.table, c
        assert c.tag in ("[src]", "[2nd]", "n/r"), c
        assert (c.value is None) == (c.tag == "n/r"), c
        assert c.training in ("single", "combined", "zero-shot", "n/r"), c
        key = (c.method, c.variant, c.dataset, c.split_by, c.split, c.metric, c.training)
        assert key not in seen, f"duplicate cell {key}"
        seen.add(key)
    # CRIS's own numbers are never labelled oIoU; its re-evaluated oIoU is a [2nd] SaFiRe number
    assert {c.metric for c in published(method="CRIS", variant="R101")} == {"mIoU*"}
    assert {c.tag for c in published(method="CRIS", variant="R101, oIoU re-evaluated by SaFiRe")} == {"[2nd]"}


def test_selection_helpers():
    assert {c.method for c in published(method="magnet")} == {"MagNet"}  # case-insensitive
    assert {c.metric for c in published(metric="mIoU")} == {"mIoU"}
    g = published(dataset="grefcoco", metric=("cIoU", "gIoU"))
    assert g and all(c.dataset == "grefcoco" for c in g)
    rows = published()
    assert select(rows, method="LAVT", with_value=False) == []
    assert len(select(rows, method="MARIS", with_value=True)) == 0
    assert methods()[-4:] == ["LTS", "MagNet", "MARIS", "HARIS"]
    with pytest.raises(LookupError, match="cells match"):
        lookup("CRIS", "refcoco", "val", "mIoU*")  # R101 and R50: a variant is needed


# ---- the tables of docs/baselines.md and the methods' "Published results", read independently ---
_PAPERS_ROW = {
    ("LAVT", "oIoU"): ("LAVT", "", "oIoU"),
    ("LAVT", "mIoU"): ("LAVT", "", "mIoU"),
    ("CRIS (R101)", "mIoU*"): ("CRIS", "R101", "mIoU*"),
    ("CRIS (R50)", "mIoU*"): ("CRIS", "R50", "mIoU*"),
    ("CRIS (R101) re-evaluated", "oIoU"): ("CRIS", "R101, oIoU re-evaluated by SaFiRe", "oIoU"),
    ("ReLA", "oIoU"): ("ReLA", "", "oIoU"),
    ("VLT (ICCV'21)", "oIoU"): ("VLT", "ICCV'21", "oIoU"),
    ("VLT (TPAMI'22)", "oIoU"): ("VLT", "TPAMI'22", "oIoU"),
    ("CARIS (reproduced †)", "oIoU"): ("CARIS", "reproduced by MaskRIS †", "oIoU"),
    ("CARIS combined data (†)", "oIoU"): ("CARIS", "combined data, reproduced by MaskRIS †", "oIoU"),
    ("LTS", "oIoU"): ("LTS", "", "oIoU"),
    ("MagNet", "oIoU"): ("MagNet", "", "oIoU"),
}


def _number(text: str) -> float | None:
    text = text.strip().strip("*")
    return float(text) if re.fullmatch(r"\d+\.\d+", text) else None


def _section(page: str, heading: str) -> str:
    """The text of ``## heading`` in ``docs/<page>`` up to the next ``## `` heading."""
    text = (DOCS / page).read_text()
    assert f"\n## {heading}\n" in text, f"docs/{page} has no section '## {heading}'"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _cell(method, variant, metric, col):
    found = published(method=method, variant=variant, metric=metric, dataset=col.dataset, split_by=col.split_by,
                      split=col.split)  # fmt: skip
    assert len(found) <= 1
    return found[0].value if found else None


def test_main_table_equals_docs_baselines():
    text = _section("baselines.md", "RefCOCO, RefCOCO+ and G-Ref")
    checked = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 13 or (cells[0], cells[2]) not in _PAPERS_ROW:
            continue
        method, variant, metric = _PAPERS_ROW[(cells[0], cells[2])]
        for col, raw in zip(STANDARD_COLUMNS, cells[3:12]):
            assert _cell(method, variant, metric, col) == _number(raw), (cells[0], metric, col)
            checked += 1
    assert checked == 9 * len(_PAPERS_ROW)
    # LAVT's precision paragraph: nine groups of five numbers, in the column order
    para = text.split("LAVT's README also gives Prec@X", 1)[1].split("**Run-to-run spread.**", 1)[0]
    groups = re.findall(r"(\d+\.\d+) / (\d+\.\d+) / (\d+\.\d+) / (\d+\.\d+) / (\d+\.\d+)", para)
    assert len(groups) == 9
    for col, group in zip(STANDARD_COLUMNS, groups):
        for k, raw in enumerate(group):
            assert _cell("LAVT", "", f"P@0.{5 + k}", col) == float(raw)


def test_grefcoco_and_seed_tables_equal_the_docs():
    text = _section("baselines.md", "gRefCOCO")
    names = {"MattNet": ("MattNet", ""), "LTS": ("LTS", "re-trained by GRES"), "VLT": ("VLT", "re-trained by GRES"),
             "CRIS": ("CRIS", "re-trained by GRES"), "LAVT": ("LAVT", "re-trained by GRES"),
             "ReLA (Swin-B)": ("ReLA", "")}  # fmt: skip
    checked = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] not in names:
            continue
        method, variant = names[cells[0]]
        for k, raw in enumerate(cells[1:]):
            split, metric = ("val", "testA", "testB")[k // 2], ("cIoU", "gIoU")[k % 2]
            assert lookup(method, "grefcoco", split, metric, variant=variant) == float(raw), (method, split, metric)
            checked += 1
    assert checked == 36
    # MagNet's combined-data row and LTS's row, on their method pages
    combined = re.search(r"\| paper \(via survey\) \|([^\n]+)", _section("methods/magnet.md", "Published results"))
    lts = re.search(r"\| paper \|([^\n]+)", _section("methods/lts.md", "Published results"))
    combined, lts = combined.group(1), lts.group(1)
    for (method, variant), row in ((("MagNet", "combined data"), combined), (("LTS", ""), lts)):
        values = [float(v) for v in row.strip().strip("|").split("|")]
        assert values == [_cell(method, variant, "oIoU", c) for c in STANDARD_COLUMNS[:8]]


def test_magnet_page_table_equals_the_published_rows():
    rows = {"CRIS": ("CRIS", "R101", "mIoU*"), "LAVT": ("LAVT", "", "oIoU"), "ReLA": ("ReLA", "", "oIoU"),
            "MagNet": ("MagNet", "", "oIoU")}  # fmt: skip
    seen = set()
    for line in _section("methods/magnet.md", "Published results").splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) != 10 or cells[0] not in rows:
            continue
        seen.add(cells[0])
        method, variant, metric = rows[cells[0]]
        assert [_number(c) for c in cells[1:]] == [_cell(method, variant, metric, c) for c in STANDARD_COLUMNS]
    assert seen == set(rows)


# ---- fabricated result files ----------------------------------------------------------------
def _write(folder: Path, stem: str, **record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(record))
    return path


def _result(model, dataset, split, metrics, *, preset="paper", protocol="network", **extra):
    return {"model": model, "preset": preset, "dataset": dataset, "split": split, "protocol": protocol,
            "metrics": metrics, **extra}  # fmt: skip


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    _write(d, "magnet_val", **_result("magnet", "refcoco", "val", {"oIoU": 75.00, "mIoU": 77.0, "P@0.5": 88.0}))
    _write(d, "magnet_testA", **_result("magnet", "refcoco", "testA", {"oIoU": 79.00}, protocol="original"))
    _write(d, "magnet_gref", **_result("magnet", "refcocog", "val", {"oIoU": 65.00}))
    _write(d, "magnet_goog", **_result("magnet", "refcocog", "val", {"oIoU": 64.00}, split_by="google"))
    _write(d, "lts_val", **_result("lts", "refcoco", "val", {"mIoU": 60.0}))  # LTS publishes oIoU only
    _write(d, "xattn_val", **_result("xattn", "refcoco", "val", {"oIoU": 50.0}))  # no published twin
    _write(d, "magnet_abl", **_result("magnet", "refcoco", "val", {"oIoU": 10.0}, ablation={"use_cam": False}))
    _write(d / "sub", "shapes", **_result("maris", "refshapes", "testA", {"oIoU": 41.5, "mIoU": 40.25},
                                          preset="tiny", protocol="original"))  # fmt: skip
    _write(d, "bench", name="not a result", samples_per_s=3.0)  # skipped
    return d


def test_comparisons_are_like_with_like_and_delta_is_right(results_dir: Path):
    results = load_results(results_dir)
    assert len(results) == 8  # the benchmark file is not a result
    comps = compare(published(), results)
    got = {(c.published.method, c.published.column, c.metric): round(c.delta, 4) for c in comps}
    assert got == {
        ("MagNet", "RefCOCO val", "oIoU"): round(75.00 - 75.24, 4),
        ("MagNet", "RefCOCO testA", "oIoU"): round(79.00 - 78.24, 4),
        ("MagNet", "G-Ref val(U)", "oIoU"): round(65.00 - 65.36, 4),  # no split_by: the UMD partition
        ("MagNet", "G-Ref val(G)", "oIoU"): round(64.00 - 63.13, 4),
    }
    # mIoU and P@0.5 have no published MagNet cell; LTS's mIoU is not set against its oIoU; the
    # ablation run, the baseline without a paper twin and RefShapes are never compared
    by_cell = {(c.published.column, c.metric): c for c in comps}
    assert by_cell[("RefCOCO testA", "oIoU")].protocol_matches is False
    assert by_cell[("RefCOCO val", "oIoU")].protocol_matches is True
    assert by_cell[("RefCOCO val", "oIoU")].within_run_spread
    assert not by_cell[("RefCOCO testA", "oIoU")].within_run_spread
    # the combined-data row is never matched by a single-data result
    assert all(c.published.variant == "" for c in comps)


def test_markdown_shows_claimed_beside_reproduced(results_dir: Path):
    text = render_markdown(load_results(results_dir))
    # one rislib row per protocol, under the claimed row; ‡ where the protocol differs from the paper's
    assert "| ↳ rislib magnet/paper | network protocol | oIoU | 75.00 (−0.24) | – |" in text
    assert "| ↳ rislib magnet/paper | original protocol | oIoU | – | 79.00 (+0.76) ‡ | – |" in text
    assert "| ↳ rislib lts/paper" not in text  # its only metric (mIoU) has no published row
    assert "| MagNet | RefCOCO val | oIoU | 75.24 | 75.00 | -0.24 | yes | network / network |" in text
    # RefShapes in its own table
    refshapes = text.split("## RefShapes", 1)[1]
    assert "refshapes: rislib maris/tiny" in refshapes and "40.25 | 41.50" in refshapes
    assert "refshapes" not in text.split("## RefShapes", 1)[0].split("## Every reproduced result", 1)[1]
    # MARIS and HARIS rows say n/r
    maris = next(line for line in text.splitlines() if line.startswith("| **MARIS"))
    assert maris.count("n/r") >= 9


def test_bad_result_files_name_the_file_and_field(tmp_path: Path):
    _write(tmp_path / "r", "bad", model="magnet", preset="paper", dataset="refcoco", split="val",
                 metrics={"oIoU": "high"})  # fmt: skip
    with pytest.raises(ResultFileError, match=r"bad\.json: metrics\['oIoU'\] must be a number"):
        load_results(tmp_path / "r")
    with pytest.raises(ResultFileError, match=r"x\.json: field 'preset' missing"):
        read_result(tmp_path / "x.json", {"model": "m", "dataset": "d", "split": "s", "metrics": {}})
    assert load_results(tmp_path / "absent") == []


def test_tables_command_writes_markdown_and_figures(results_dir: Path, tmp_path: Path):
    from rislib.tables import cli

    parser = argparse.ArgumentParser()
    cli.configure(parser)
    args = parser.parse_args(["--results", str(results_dir), "--out", str(tmp_path / "o"), "--figures",
                              str(tmp_path / "f")])  # fmt: skip
    assert cli.main(args) == 0
    text = (tmp_path / "o" / "tables.md").read_text()
    assert "75.00 (−0.24)" in text
    names = sorted(p.name for p in (tmp_path / "f").glob("09_*.png"))
    assert names == ["09_claimed_vs_reproduced.png", "09_metric_gap.png", "09_published_oiou.png"]


def test_committed_tables_md_is_what_the_tables_command_writes_now():
    """benchmarks/tables.md is generated ("do not edit by hand"): a result file added under
    benchmarks/results without re-running ``python -m rislib tables`` would leave it stale."""
    from rislib.tables import load_results, render_markdown

    root = DOCS.parent
    committed = (root / "benchmarks" / "tables.md").read_text()
    figures = re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", committed, flags=re.M)
    assert figures and all((root / "benchmarks" / f).resolve().is_file() for f in figures), figures
    text = render_markdown(load_results(root / "benchmarks" / "results"), figures=figures)
    assert text == committed, "benchmarks/tables.md is stale: run `python -m rislib tables`"


# ---- ablations ------------------------------------------------------------------------------------
def test_paired_bootstrap_equals_an_independent_loop():
    rng = np.random.default_rng(5)
    n = 40
    ua = rng.integers(50, 100, n).astype(float)
    ia = np.floor(ua * rng.uniform(0, 1, n))
    ub = rng.integers(50, 100, n).astype(float)
    ib = np.floor(ub * rng.uniform(0, 1, n))
    out = paired_bootstrap(ia, ua, ib, ub, n_boot=300, seed=3)
    draws = np.random.default_rng(3).integers(0, n, size=(300, n))
    m, o = [], []
    for row in draws:
        m.append(100 * np.mean([ia[k] / ua[k] - ib[k] / ub[k] for k in row]))
        overall_a = sum(ia[k] for k in row) / sum(ua[k] for k in row)
        overall_b = sum(ib[k] for k in row) / sum(ub[k] for k in row)
        o.append(100 * (overall_a - overall_b))
    assert out["mIoU"] == pytest.approx(100 * np.mean(ia / ua - ib / ub))
    assert out["oIoU"] == pytest.approx(100 * (ia.sum() / ua.sum() - ib.sum() / ub.sum()))
    assert out["mIoU_lo"] == pytest.approx(np.quantile(m, 0.025))
    assert out["mIoU_hi"] == pytest.approx(np.quantile(m, 0.975))
    assert out["oIoU_lo"] == pytest.approx(np.quantile(o, 0.025))
    assert out["oIoU_hi"] == pytest.approx(np.quantile(o, 0.975))
    same = paired_bootstrap(ia, ua, ia, ua, n_boot=50)
    assert same["mIoU"] == same["mIoU_lo"] == same["mIoU_hi"] == 0.0
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1.0], [2.0], [1.0, 1.0], [2.0, 2.0])


def _ablation_run(
    root: Path, model: str, overrides: dict, ious: dict[str, list[float]], kind: str = "model", seed: int | None = None
):
    """Evaluator-style JSON + CSV per split, with U = 100 and I = 100 * IoU per sentence
    (``seed``: the layout of ``run_ablations.py --seeds``, ``<root>/seed<k>/<row>``)."""
    row = row_name(model, overrides) if seed is None else f"seed{seed}/{row_name(model, overrides)}"
    folder = root / ("floor" if kind == "predictor" else row)
    folder.mkdir(parents=True, exist_ok=True)
    for split, values in ious.items():
        stem = folder / f"{model}_tiny_refshapes_{split}"
        score = 100 * float(np.mean(values))
        metrics = {"mIoU": score, "oIoU": score, "n": len(values)}
        record = _result(model, "refshapes", split, metrics, preset="tiny", protocol="original", kind=kind)
        if kind == "model":
            record["ablation"] = overrides
        if seed is not None:
            record["seed"] = seed
        stem.with_suffix(".json").write_text(json.dumps(record))
        with open(stem.with_suffix(".csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ref_id", "sent_id", "I", "U", "IoU"])
            for k, v in enumerate(values):
                w.writerow([k, 0, 100 * v, 100, v])


def test_claims_are_judged_from_paired_per_sample_results(tmp_path: Path):
    good = {s: [0.6, 0.7, 0.8, 0.5] * 10 for s in ("testA", "testB", "testC")}
    worse = {s: [v - 0.2 for v in vals] for s, vals in good.items()}
    better = {s: [v + 0.1 for v in vals] for s, vals in good.items()}
    _ablation_run(tmp_path, "maris", {}, good)
    _ablation_run(tmp_path, "maris", {"use_vga": False}, worse)  # removal hurts: holds
    _ablation_run(tmp_path, "maris", {"use_lga": False}, better)  # removal helps: reversed
    _ablation_run(tmp_path, "maris", {"use_mm_query": False}, good)  # no difference: inconclusive
    results = load_results(tmp_path)
    grouped = group_ablation_results(results)
    assert set(grouped) == {"maris-full", "maris-use_vga-false", "maris-use_lga-false", "maris-use_mm_query-false"}
    verdicts = {v.claim.row: v for v in judge_claims(grouped, n_boot=200)}
    assert verdicts["maris-use_vga-false"].verdict == "holds"
    assert verdicts["maris-use_vga-false"].pooled["mIoU"] == pytest.approx(20.0)
    assert verdicts["maris-use_vga-false"].per_split["testB"]["mIoU"] == pytest.approx(20.0)
    assert verdicts["maris-use_lga-false"].verdict == "reversed"
    assert verdicts["maris-use_mm_query-false"].verdict == "inconclusive"
    assert verdicts["haris-use_feedback-false"].verdict == "missing"
    # an expression-blind heuristic scoring 0.9 everywhere: the full model (0.65) is below the floor
    _ablation_run(tmp_path, "largest_object", {}, {s: [0.9] * 40 for s in good}, kind="predictor")
    results = load_results(tmp_path)
    floor = floor_results(results)
    assert {r.model for r in floor} == {"largest_object"}
    assert floor_miou(floor) == pytest.approx(90.0)
    low = {v.claim.row: v for v in judge_claims(group_ablation_results(results), floor=floor_miou(floor), n_boot=50)}
    assert low["maris-use_vga-false"].verdict == "holds" and low["maris-use_vga-false"].below_floor
    assert low["maris-use_vga-false"].label == "holds, below floor"
    assert low["maris-use_vga-false"].full_mIoU == pytest.approx(65.0)
    assert not verdicts["maris-use_vga-false"].below_floor  # no floor given
    assert "**reversed, below floor**" in verdicts_markdown(list(low.values()))


def test_two_ablation_studies_never_mix(tmp_path: Path):
    good = {s: [0.6, 0.7] * 10 for s in ("testA", "testB", "testC")}
    for study, shift in (("cpu", 0.2), ("gpu", -0.2)):
        _ablation_run(tmp_path / study, "lts", {}, good)
        _ablation_run(tmp_path / study, "lts", {"use_position_prior": False},
                      {s: [v - shift for v in vals] for s, vals in good.items()})  # fmt: skip
    studies = {s.name: s for s in ablation_studies(load_results(tmp_path), n_boot=100)}
    assert set(studies) == {"cpu", "gpu"}
    lts = {s: next(v for v in studies[s].verdicts if v.claim.model == "lts") for s in studies}
    assert (lts["cpu"].verdict, lts["gpu"].verdict) == ("holds", "reversed")
    text = render_markdown(load_results(tmp_path))
    assert "### Ablation study `cpu`" in text and "### Ablation study `gpu`" in text


def test_ablation_rows_cover_every_claim_with_real_config_fields():
    from rislib.models import get_config

    names = [row_name(m, o) for m, o in ABLATION_ROWS]
    assert names[:4] == ["maris-full", "maris-use_vga-false", "maris-use_lga-false", "maris-use_mm_query-false"]
    assert len(names) == 11 and len(set(names)) == 11
    for claim in ABLATION_CLAIMS:
        config = get_config(claim.model, "tiny")
        for key, value in claim.overrides.items():
            assert getattr(config, key) is True and value is False, (claim.model, key)


def test_a_study_with_two_seeds_averages_them_and_needs_both_to_agree(tmp_path: Path):
    splits = ("testA", "testB", "testC")
    good = {s: [0.6, 0.7, 0.8, 0.5] * 10 for s in splits}
    shifted = lambda d: {s: [v - d for v in vals] for s, vals in good.items()}  # noqa: E731
    root = tmp_path / "trained"
    for seed, (lts_gap, maris_gap) in enumerate(((0.2, 0.1), (0.1, -0.05))):
        _ablation_run(root, "lts", {}, good, seed=seed)
        _ablation_run(root, "lts", {"use_position_prior": False}, shifted(lts_gap), seed=seed)  # hurts in both
        _ablation_run(root, "maris", {}, good, seed=seed)
        _ablation_run(root, "maris", {"use_vga": False}, shifted(maris_gap), seed=seed)  # seeds disagree
    _ablation_run(root, "largest_object", {}, {s: [0.3] * 40 for s in splits}, kind="predictor")
    (study,) = ablation_studies(load_results(tmp_path), n_boot=100)
    assert study.name == "trained" and study.seeds == (0, 1)
    assert "lts-full · seed 1" in study.grouped and len(study.floor) == 3
    v = {x.claim.row: x for x in study.verdicts}
    lts = v["lts-use_position_prior-false"]
    assert lts.per_seed == pytest.approx({0: 20.0, 1: 10.0})
    assert lts.pooled["mIoU"] == pytest.approx(15.0)  # each sentence's IoU averaged over the two seeds
    assert lts.pooled["oIoU"] == pytest.approx(15.0)
    assert lts.verdict == "holds" and not lts.below_floor and lts.full_mIoU == pytest.approx(65.0)
    vga = v["maris-use_vga-false"]
    assert vga.per_seed == pytest.approx({0: 10.0, 1: -5.0})
    assert vga.pooled["mIoU_lo"] > 0 and vga.verdict == "inconclusive"  # the interval alone would say holds
    assert v["maris-use_lga-false"].verdict == "missing"
    text = verdicts_markdown(study.verdicts)
    assert "+20.00 (seed 0), +10.00 (seed 1)" in text
    assert "| lts-full · seed 1 |" in results_markdown(study.grouped)
    with pytest.raises(ValueError, match="seeds"):
        judge_claims([study.by_seed[0]], seeds=[0, 1])
    path = tmp_path / "fig.png"
    plot_ablations(study.grouped, study.verdicts, floor=study.floor, path=path, by_seed=study.by_seed)
    assert path.stat().st_size > 0
    # a second study beside it keeps its own floor, in the tables as in the verdicts
    smoke = tmp_path / "smoke"
    _ablation_run(smoke, "lts", {}, good)
    _ablation_run(smoke, "lts", {"use_position_prior": False}, shifted(0.1))
    _ablation_run(smoke, "largest_object", {}, {s: [0.2] * 40 for s in splits}, kind="predictor")
    studies = {x.name: x for x in ablation_studies(load_results(tmp_path), n_boot=100)}
    assert [r.value("mIoU") for r in studies["smoke"].floor] == pytest.approx([20.0] * 3)
    text = render_markdown(load_results(tmp_path), studies=list(studies.values()))
    assert "| `smoke/floor` | 20.00 |" in text and "| `trained/floor` | 30.00 |" in text
    trained_part = text.split("### Ablation study `trained`")[1]
    assert "**missing**" not in trained_part  # claims not run are named once, not tabled
    assert "Not trained in this study: `maris-use_lga-false`" in trained_part
