"""The environment files, the Makefile and CI agree with each other and with the README."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_packages() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in meta["dependencies"]}
    for extra in ("dev", "offline-weights"):
        names |= {_name(r) for r in meta["optional-dependencies"][extra]}
    return names


def _environment_packages() -> set[str]:
    names, in_pip = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.strip() == "- pip:":
            in_pip = True
            continue
        m = re.match(r"\s+- ([A-Za-z0-9_.\-]+)", line)
        if in_pip and m and not line.strip().startswith("- -e"):
            names.add(_name(m.group(1)))
    return names


def test_environment_yml_and_pyproject_name_the_same_packages():
    py, env = _pyproject_packages(), _environment_packages()
    assert py == env, f"only in pyproject: {sorted(py - env)}; only in environment.yml: {sorted(env - py)}"


def test_constraints_pin_every_runtime_dependency():
    pins = {}
    for line in (ROOT / "requirements/constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_name(name)] = version
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    missing = sorted(_pyproject_packages() - set(pins))
    assert not missing, f"constraints.txt does not pin {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"
    assert "HF_HUB_OFFLINE=1" in ci


def test_makefile_targets_exist_and_test_and_demo_set_up_first():
    mk = (ROOT / "Makefile").read_text()
    for target in ("setup", "test", "demo", "lab", "bench"):
        assert re.search(rf"^{target}:", mk, re.M), f"Makefile has no {target!r} target"
    assert re.search(r"^test: setup", mk, re.M) and re.search(r"^demo: setup", mk, re.M)
