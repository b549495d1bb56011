"""Shared test setup: offline, deterministic, few threads (CI has 2 cores and 2 workers)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RISLIB_FAST", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---- shared fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def refshapes_root(tmp_path_factory: pytest.TempPathFactory):
    """``root(size=64, seed=0)``: a RefShapes root with 8 training images at ``size``, generated
    once per session (tests read it; none may write there)."""
    from rislib.data import generate_refshapes

    roots: dict[tuple[int, int], object] = {}

    def root(size: int = 64, seed: int = 0):
        if (size, seed) not in roots:
            path = tmp_path_factory.mktemp(f"refshapes_{size}px_seed{seed}")
            generate_refshapes(path, seed=seed, size=size, counts={"train": 8}, workers=0, progress=False)
            roots[size, seed] = path
        return roots[size, seed]

    return root


@pytest.fixture
def randomise():
    """``randomise(module, std=0.5, seed=None)``: every parameter drawn from ``N(0, std^2)``
    (LayerNorm affines and zero-initialised gates included), from the global generator or,
    with ``seed``, from a generator of its own; returns the module."""

    def randomise(module: torch.nn.Module, std: float = 0.5, seed: int | None = None) -> torch.nn.Module:
        g = None if seed is None else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                if g is None:
                    p.normal_(0, std)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * std)
        return module

    return randomise


@pytest.fixture(scope="session")
def toy_models() -> tuple[str, ...]:
    """Register the toy models of ``tests/toy_model.py`` (once); their names."""
    from toy_model import register_toy_models

    return register_toy_models()
