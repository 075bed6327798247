"""The notebooks as a student opens them: JupyterLab on localhost, driven in a real Chromium through Playwright.

The test starts JupyterLab (no token, a free port, its own config folder) on copies of notebooks 01 and 02 (they
need no finished study), opens each in the browser, runs all cells through the menu (*Run > Run All Cells*),
and checks that every cell ran on the project's kernel, *Python (wbc)*, with no error output, and that the
solutions' code and answers stay collapsed. The server and its kernels are stopped at the end.

It is skipped, saying why, only when Chromium (``/usr/bin/chromium``, or ``WBC_CHROMIUM``) or JupyterLab is
missing: ``make setup`` installs both. Playwright never downloads a browser here. Set ``WBC_SCREENSHOTS`` to a
folder to keep a screenshot of each notebook.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_data.ipynb", "02_model.ipynb")
KERNEL = "wbc"


def _chromium() -> str | None:
    for cand in (os.environ.get("WBC_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make setup installs Debian's chromium "
                                                 "as root; or set WBC_CHROMIUM)"),
    pytest.mark.skipif(importlib.util.find_spec("jupyterlab") is None,
                       reason="JupyterLab is not installed (make setup installs requirements.txt)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="Playwright is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_env(tmp: Path) -> dict:
    """The environment for the server. The notebooks name the kernel 'wbc' that `make setup` registers; when this
    Python has not registered it (a bare pip install), a private copy pointing at this Python stands in."""
    from jupyter_client.kernelspec import KernelSpecManager

    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               PYTHONUNBUFFERED="1")
    if KERNEL not in KernelSpecManager().find_kernel_specs():
        spec = tmp / "share" / "jupyter" / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (wbc)", "language": "python"}))
        env["JUPYTER_PATH"] = os.pathsep.join([str(tmp / "share" / "jupyter"), env.get("JUPYTER_PATH", "")])
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving copies of the notebooks (a student's edits and autosaves never touch the repository)."""
    tmp = tmp_path_factory.mktemp("lab")
    work = tmp / "notebooks"
    work.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, work / name)
    port = _free_port()
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=work, env=_kernel_env(tmp), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"JupyterLab did not start:\n{(tmp / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, work, tmp
    finally:
        try:  # the whole process group: the server and the kernels it started
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        log.close()


#: The open notebook's state, read from JupyterLab's own model (exposed with expose_app_in_browser).
STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) return null;
  const ctx = panel.sessionContext;
  const cells = [];
  panel.content.widgets.forEach((w, i) => {
    const m = w.model;
    if (m.type !== 'code') return;
    const outputs = m.outputs.toJSON();
    cells.push({index: i, count: m.executionCount, tags: m.getMetadata('tags') || [],
                inputHidden: w.inputHidden,
                errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
                text: outputs.map(o => o.text !== undefined ? String(o.text) :
                                  Object.keys(o.data || {}).filter(k => k !== 'text/plain').join(' ') ||
                                  String((o.data || {})['text/plain'] || '')).join(''),
                stderr: outputs.filter(o => o.name === 'stderr').map(o => String(o.text).slice(0, 300))});
  });
  return {kernel: ctx.kernelDisplayName, status: ctx.session && ctx.session.kernel ?
          ctx.session.kernel.status : 'none', cells: cells};
}"""


def _wait_for(page, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS)
        if state and predicate(state):
            return state
        page.wait_for_timeout(300)
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(state)[:2000]}")


def _run_all(page, url: str, name: str, shots: Path | None) -> tuple[dict, float]:
    start = time.monotonic()
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset")  # a fresh layout: this notebook only
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    _wait_for(page, lambda s: s["status"] == "idle", 90, f"{name}'s kernel to start")
    for attempt in range(3):  # on a loaded machine the first click can land before the notebook has focus
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            _wait_for(page, lambda s: s["status"] != "idle" or any(c["count"] for c in s["cells"]), 20,
                      f"{name} to start running")
            break
        except AssertionError:
            page.keyboard.press("Escape")
            if attempt == 2:
                raise
    state = _wait_for(page, lambda s: s["status"] == "idle" and all(c["count"] for c in s["cells"]), 120,
                      f"{name} to run all its cells")
    if shots is not None:  # the first figure, then the exercises at the end
        figures = page.locator(".jp-Notebook .jp-Cell .jp-RenderedImage")
        (figures.first if figures.count() else page.locator(".jp-Notebook .jp-Cell").first).scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"{Path(name).stem}.png"))
        page.locator(".jp-Notebook .jp-Cell").last.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"{Path(name).stem}-end.png"))
    return state, time.monotonic() - start


def test_students_run_notebooks_in_jupyterlab_in_a_real_browser(lab):
    from playwright.sync_api import sync_playwright

    from wbc_utils.notebook import HIDDEN_ANSWER

    url, work, tmp = lab
    shots = Path(os.environ["WBC_SCREENSHOTS"]) if os.environ.get("WBC_SCREENSHOTS") else tmp
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.monotonic()
            for name in NOTEBOOKS:
                state, seconds = _run_all(page, url, name, shots)
                print(f"{name}: all {len(state['cells'])} code cells ran in the browser in {seconds:.1f} s")
                assert state["kernel"] == "Python (wbc)", f"{name} opened with the kernel {state['kernel']!r}"
                errors = [(c["index"], e) for c in state["cells"] for e in c["errors"]]
                assert not errors, f"{name}: cells with an error output: {errors}"
                for c in state["cells"]:
                    if c["stderr"]:
                        print(f"  {name} cell {c['index']} wrote to stderr: {c['stderr']}")
                solutions = [c for c in state["cells"] if "solution" in c["tags"]]
                assert solutions, f"{name} has no solution cells"
                for c in solutions:  # code collapsed, the answer not printed
                    assert c["inputHidden"], f"{name} cell {c['index']}: a solution's code shows: {c}"
                    assert c["text"].strip() == HIDDEN_ANSWER, \
                        f"{name} cell {c['index']}: a solution gives its answer away after Run All: {c['text'][:300]}"
                page.close()
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
            print(f"the browser ran {len(NOTEBOOKS)} notebooks in {time.monotonic() - start:.1f} s")
        finally:
            browser.close()
    for name in NOTEBOOKS:  # the server saved what the browser ran into the copies, never into the repository
        assert json.loads((ROOT / "notebooks" / name).read_text())["cells"][0].get("outputs", []) == []
