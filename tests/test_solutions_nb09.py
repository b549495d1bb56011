"""Solutions of notebook 09's exercises."""

from __future__ import annotations

import numpy as np
import pytest

from solutions import nb09


def test_margins_over_best_baseline():
    m = nb09.margins_over_best_baseline("MagNet", ["LAVT", "ReLA", ("CRIS", "R101, oIoU re-evaluated by SaFiRe")])
    assert len(m) == 9
    assert m["RefCOCO val"] == pytest.approx(75.24 - 73.82)  # ReLA is the best baseline there
    assert m["G-Ref val(G)"] == pytest.approx(63.13 - 62.70)  # CRIS has no val(G) number: LAVT and ReLA only
    assert sum(abs(v) <= 0.5 for v in m.values()) == 6
    only_lavt = nb09.margins_over_best_baseline("LTS", ["LAVT"])
    assert len(only_lavt) == 8 and only_lavt["RefCOCO val"] == pytest.approx(65.43 - 72.73)


def test_sign_flip_test():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 200)
    assert nb09.sign_flip_test(a, a) == 1.0  # no difference at all
    p_big = nb09.sign_flip_test(a + 0.1, a, n=999)
    assert p_big == pytest.approx(1 / 1000)  # every flip gives a smaller mean difference
    noise = rng.normal(0, 0.2, 200)
    p = nb09.sign_flip_test(a + noise, a, n=999, seed=1)
    assert 0.001 < p <= 1.0 and p == nb09.sign_flip_test(a + noise, a, n=999, seed=1)
    with pytest.raises(ValueError, match="equal-length"):
        nb09.sign_flip_test([], [])


def test_gpu_hours():
    assert nb09.gpu_hours(40, "refcoco", 34.1) == pytest.approx(40 * 42_404 / 34.1 / 3600)
    assert nb09.gpu_hours(40, "refcoco", 34.1) == pytest.approx(13.82, abs=0.01)
    assert nb09.gpu_hours(45, "refcoco", 50.0, gpus=4) == pytest.approx(nb09.gpu_hours(45, "refcoco", 50.0) / 4)
    with pytest.raises(KeyError, match="unknown data set"):
        nb09.gpu_hours(1, "phrasecut", 1.0)
