"""A real JupyterLab in a real headless Chromium: run a widgets notebook, click the ReductionPicker.

The test starts JupyterLab on a free localhost port (no token, temporary root, config,
settings, workspace and runtime folders), opens a notebook in Debian's ``/usr/bin/chromium``
driven by Playwright, runs all cells, clicks "max" on the ReductionPicker and checks that the
preview image is replaced.  A screenshot lands in the test's temp folder, and also in
``benchmarks/results/screenshots/`` when ``IRIS_SAVE_SCREENSHOTS`` is set.

Needs ``chromium`` (apt) and ``playwright`` (pip); ``.ci/install_browser.sh`` installs both.
Without them the test is skipped, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("IRIS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT_DIR = REPO / "benchmarks" / "results" / "screenshots"

# Notebooks to open: None is a small widgets notebook written into the test's temp folder;
# a path (relative to the repository) opens a copy of that notebook instead.  Each must display
# a ReductionPicker (the first one on the page is the one clicked).  The widgets tutorial also
# trains a small model through the TrainingPanel while the browser watches (about a minute on CPU).
NOTEBOOKS = [None, "notebooks/04_train_in_notebook.ipynb"]

WIDGETS_NOTEBOOK_CELLS = [
    "from iris_nb.quickstart import toy_cmz_cube\nfrom iris_nb.widgets import ReductionPicker",
    "cube, truth = toy_cmz_cube(seed=0)\npicker = ReductionPicker(cube)\npicker",
]


def _require_browser():
    """Skip (or, under CI, fail) when Chromium or Playwright is missing."""
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install playwright)")
    if missing:
        reason = "browser check needs " + " and ".join(missing) + "; run .ci/install_browser.sh"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(reason + " (CI=true, so this is an error, not a skip)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_widgets_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in WIDGETS_NOTEBOOK_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)
    return path


class JupyterLab:
    """A JupyterLab server on localhost in its own process group, isolated in ``base``."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folders = {
            "JUPYTER_CONFIG_DIR": base / "config",
            "JUPYTER_RUNTIME_DIR": base / "runtime",
            "JUPYTERLAB_SETTINGS_DIR": base / "settings",
            "JUPYTERLAB_WORKSPACES_DIR": base / "workspaces",
            "IPYTHONDIR": base / "ipython",
        }
        for folder in [self.root, *folders.values()]:
            folder.mkdir(parents=True, exist_ok=True)
        news = folders["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True)
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
        self.env = {**os.environ, **{key: str(value) for key, value in folders.items()}}
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["MPLBACKEND"] = "Agg"
        self.log = base / "jupyterlab.log"
        self.process = None

    def start(self, timeout: float = 60.0) -> None:
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
            "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
            f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # CI containers run as root
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not answer on {self.url} in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM the server (it shuts its kernels down), then SIGKILL its process group if needed."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def jupyterlab(tmp_path):
    _require_browser()
    lab = JupyterLab(tmp_path / "lab")
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def _open_notebook(lab: JupyterLab, notebook) -> str:
    """Put the notebook under the server root; return its name there."""
    if notebook is None:
        return _write_widgets_notebook(lab.root / "widgets_check.ipynb").name
    source = (REPO / notebook).resolve()
    if not source.is_file():
        raise FileNotFoundError(f"browser check notebook {source} does not exist")
    shutil.copy(source, lab.root / source.name)  # run a copy: the repository's outputs stay as they are
    return source.name


RUN_ALL = """async () => {
    const app = window.jupyterapp;
    const panel = app.shell.currentWidget;
    await panel.context.ready;
    await panel.sessionContext.ready;
    await app.commands.execute('notebook:run-all-cells');
    const errors = [];
    for (const cell of panel.content.model.cells) {
        if (cell.type !== 'code') continue;
        for (let i = 0; i < cell.outputs.length; i++) {
            const out = cell.outputs.get(i).toJSON();
            if (out.output_type === 'error') errors.push(out.ename + ': ' + out.evalue);
        }
    }
    return errors;
}"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda n: "tmp-widgets-notebook" if n is None else Path(n).stem)
def test_reduction_picker_in_jupyterlab(jupyterlab, tmp_path, notebook):
    from playwright.sync_api import sync_playwright

    name = _open_notebook(jupyterlab, notebook)
    shot = tmp_path / f"jupyterlab_{Path(name).stem}.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"{jupyterlab.url}/lab/tree/{name}")
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            errors = page.evaluate(RUN_ALL)  # resolves when every cell has run
            assert errors == [], f"cells of {name} raised: {errors}"

            picker = page.locator(".iris-nb-reduction-picker").first
            picker.wait_for(state="visible")
            image = picker.locator("img.iris-nb-preview")
            image.wait_for(state="visible")
            page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle())
            before = image.get_attribute("src")
            assert before, "the preview image has no source"

            picker.locator("button", has_text="max").click()
            page.wait_for_function("([el, old]) => el.src !== old && el.complete && el.naturalWidth > 0",
                                   arg=[image.element_handle(), before])
            page.wait_for_function("el => el.textContent.includes('max over')",
                                   arg=picker.locator(".widget-html").last.element_handle())
            assert picker.locator("button.mod-active", has_text="max").count() == 1
            picker.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("IRIS_SAVE_SCREENSHOTS"):
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT_DIR / shot.name)
