"""The explorer in a real browser: JupyterLab served locally, driven by headless Chromium.

Starts JupyterLab on 127.0.0.1 (a free port, no token, every Jupyter folder in a temporary
directory), opens a small dedicated notebook that builds the explorer, runs it, takes a
screenshot of the rendered widget, clicks a word on the token strip and checks that the
picture changed. It needs Debian's ``chromium`` (``/usr/bin/chromium``, or the path in
``RISLIB_CHROMIUM``) and the ``playwright`` package; it is skipped without them.

Run it with ``python -m pytest -m browser tests/test_browser.py``. With
``RISLIB_BROWSER_SCREENSHOT=figures/08_explorer_browser.png`` the last screenshot is kept.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RISLIB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGE = ".jp-OutputArea-output img.widget-image"
WAIT_MS = 240_000  # a cold kernel imports torch and builds a model on a shared 2-core machine

NOTEBOOK_CODE = """
from pathlib import Path

import torch

from rislib.data import RISDataset, generate_refshapes, open_source
from rislib.models import build_model
from rislib.viz import explorer

root = Path("refshapes")
generate_refshapes(root, seed=0, size=64, counts={"train": 0, "val": 2, "testA": 0, "testB": 0, "testC": 0},
                   workers=0, progress=False)
val = RISDataset(open_source(root, "refshapes"), "val", mode="eval", image_size=64)
torch.manual_seed(0)
app = explorer(build_model("xattn", preset="tiny", image_size=64), val)
app
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode} before serving {url}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout:.0f} s")


def _run_code_cell(page, timeout_error: type[Exception]) -> None:
    """Focus the notebook's code cell and run it with Shift+Enter, until its prompt shows it ran
    (a key press that lands while JupyterLab is still settling is retried)."""
    ran = "() => /\\[(\\*|\\d+)\\]/.test(document.querySelector('.jp-CodeCell .jp-InputArea-prompt').textContent)"
    for _ in range(5):
        page.click(".jp-Notebook .jp-CodeCell .cm-content")
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(ran, timeout=20_000)
            return
        except timeout_error:
            continue
    raise AssertionError("the code cell never started running")


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


@pytest.fixture
def lab(tmp_path: Path):
    """A JupyterLab server over ``tmp_path/work`` holding the test notebook; yields its URL."""
    if shutil.which("jupyter", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("jupyter is not installed next to this Python")
    work = tmp_path / "work"
    work.mkdir()
    nb = new_notebook(cells=[new_code_cell(NOTEBOOK_CODE.strip())])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, work / "explorer.ipynb")
    env = dict(os.environ)
    for var in (
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_DATA_DIR",
        "JUPYTER_RUNTIME_DIR",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
        "IPYTHONDIR",
    ):
        env[var] = str(tmp_path / var.lower())
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    # no news toast over the output (and no request for news)
    notification = tmp_path / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--allow-root",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.extension_manager=readonly",
        "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={work}",
        "--ServerApp.port_retries=0",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = tmp_path / "lab.log"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status", proc, timeout=120, log=log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_explorer_renders_and_reacts_in_chromium(lab: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RISLIB_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(f"{lab}/lab/tree/explorer.ipynb", wait_until="domcontentloaded", timeout=WAIT_MS)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell .cm-content", timeout=WAIT_MS)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=WAIT_MS)
            _run_code_cell(page, sync_api.TimeoutError)
            page.wait_for_function(
                f"() => {{ const i = document.querySelector('{IMAGE}');"
                " return i && i.complete && i.naturalWidth > 100; }",
                timeout=WAIT_MS,
            )
            output = page.locator(".jp-OutputArea-output").filter(has=page.locator("img.widget-image")).first
            before_src = page.locator(IMAGE).get_attribute("src")
            before = output.screenshot()

            strip = page.locator(".widget-toggle-buttons button")
            labels = [t.strip() for t in strip.all_inner_texts()]
            assert labels[0] == "sentence" and len(labels) > 3, labels  # the token strip: sentence + tokens
            word = next(i for i, t in enumerate(labels) if i > 0 and not t.startswith("["))
            strip.nth(word).click()
            page.wait_for_function(
                f"src => document.querySelector('{IMAGE}').src !== src", arg=before_src, timeout=WAIT_MS
            )
            page.wait_for_function(f"() => document.querySelector('{IMAGE}').complete", timeout=WAIT_MS)
            active = page.locator(".widget-toggle-buttons button.mod-active").all_inner_texts()
            assert [t.strip() for t in active] == [labels[word]], active
            after = output.screenshot()
        except (AssertionError, sync_api.Error) as e:
            page.screenshot(path=str(tmp_path / "failure.png"))
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            pytest.fail(f"{e}\noutputs: {outputs}\npage: {tmp_path / 'failure.png'}")
        finally:
            browser.close()

    a, b = _pixels(before), _pixels(after)
    assert a.std() > 5, "the explorer's image rendered blank"
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    changed = np.abs(a[:h, :w] - b[:h, :w]).max(-1) > 8
    assert changed.mean() > 0.01, f"only {changed.mean():.2%} of the pixels changed after selecting a word"
    (tmp_path / "before.png").write_bytes(before)
    (tmp_path / "after.png").write_bytes(after)
    keep = os.environ.get("RISLIB_BROWSER_SCREENSHOT")
    if keep:
        from PIL import Image

        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(after)).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
        shot.save(keep, optimize=True)  # a 256-colour PNG: a third of the size, no visible change
