"""Execute the report notebook against a study's artifacts, export it to HTML and PDF.

* ``report/<profile>/report.ipynb``: the executed report (kept out of git);
* ``report/<profile>/report.html``: self-contained, code hidden, no network needed;
* ``report/<profile>/report.pdf``: nbconvert's ``webpdf`` exporter driven by the
  system's Chromium (Debian's ``chromium`` package), never a browser download;
* ``report/report.html`` and ``report/report.pdf``: copies of the latest.

PDF export needs Chromium; without it the HTML is still written and the error
says which package to install.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .artifacts import atomic_path
from .data import REPO_ROOT, output_root
from .errors import WBCError

REPORT_NOTEBOOK = REPO_ROOT / "report" / "report.ipynb"
TEMPLATES = Path(__file__).resolve().parent / "templates"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("WBC_CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


def execute_report(profile: str, runs_root=None, out_dir: Path | None = None) -> Path:
    """Run the report notebook with papermill for ``profile``; returns the executed notebook's path."""
    import papermill as pm

    out_dir = out_dir or output_root() / "report" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "report.ipynb"
    with atomic_path(out) as tmp:
        pm.execute_notebook(str(REPORT_NOTEBOOK), str(tmp), cwd=str(REPORT_NOTEBOOK.parent), progress_bar=False,
                            parameters={"profile": profile, "runs_root": str(runs_root or "")},
                            kernel_name="python3")
    return out


def _html_exporter(cls=None):
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    c = Config()
    for name in ("HTMLExporter", "WebPDFExporter"):
        c[name].exclude_input = True
        c[name].exclude_input_prompt = True
        c[name].exclude_output_prompt = True
        c[name].embed_images = True
        c[name].extra_template_basedirs = [str(TEMPLATES)]
        c[name].template_name = "wbc_report"
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = ("remove_cell", "parameters", "injected-parameters")
    exporter = (cls or HTMLExporter)(config=c)
    exporter.register_preprocessor("nbconvert.preprocessors.TagRemovePreprocessor", enabled=True)
    exporter.register_preprocessor(_drop_stderr, enabled=True)
    return exporter


def _drop_stderr(nb, resources):
    """Library chatter on stderr (TensorFlow's start-up lines) is not part of the report."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb, resources


def export_html(executed: Path, out: Path) -> Path:
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    body, _ = _html_exporter().from_notebook_node(nb)
    with atomic_path(out) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return out


def _webpdf_exporter():
    from nbconvert.exporters.webpdf import WebPDFExporter

    class SystemChromiumWebPDF(WebPDFExporter):
        """nbconvert's webpdf exporter, launching the system Chromium instead of a downloaded one."""

        def run_playwright(self, html):
            from playwright.async_api import BrowserType

            chromium = find_chromium()
            if chromium is None:
                raise WBCError("PDF export needs Chromium: install Debian's `chromium` package "
                               "(`make setup` does, as root), or set WBC_CHROMIUM to a Chromium binary.")
            original = BrowserType.launch

            async def launch(self_, *a, **kw):
                kw.setdefault("executable_path", chromium)
                return await original(self_, *a, **kw)

            BrowserType.launch = launch
            try:
                return super().run_playwright(html)
            finally:
                BrowserType.launch = original

    exporter = _html_exporter(SystemChromiumWebPDF)
    exporter.disable_sandbox = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    exporter.browser_args = ["--disable-gpu", "--disable-background-networking", "--disable-component-update",
                             "--no-first-run", "--disable-sync"]
    return exporter


def export_pdf(executed: Path, out: Path) -> Path:
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    pdf, _ = _webpdf_exporter().from_notebook_node(nb)
    with atomic_path(out) as tmp:
        tmp.write_bytes(pdf)
    return out


def build_report(profile: str, runs_root=None, pdf: bool = True) -> dict:
    """Execute and export the report; returns {"html": path, "pdf": path or None, "pdf_error": str or None}."""
    out_dir = output_root() / "report" / profile
    executed = execute_report(profile, runs_root, out_dir)
    html = export_html(executed, out_dir / "report.html")
    _copy(html, output_root() / "report" / "report.html")
    result = {"html": html, "pdf": None, "pdf_error": None}
    if pdf:
        try:
            p = export_pdf(executed, out_dir / "report.pdf")
            _copy(p, output_root() / "report" / "report.pdf")
            result["pdf"] = p
        except Exception as e:  # HTML stands on its own; say exactly what PDF needs
            result["pdf_error"] = f"{type(e).__name__}: {e}"
    return result


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
