"""Execute the report notebook against a study's artifacts, export it to HTML and PDF.

``make report`` writes, under ``report/<profile>/`` (git-ignored):

* ``report.ipynb``: the executed report;
* ``report.html``: self-contained, code hidden, no network needed;
* ``report.pdf``: nbconvert's ``webpdf`` exporter driven by the system's Chromium
  (Debian's ``chromium`` package), never a browser download;
* ``results.json``: the headline numbers, from the same tables as the report;

and copies of the latest as ``report/report.html`` and ``report/report.pdf``. The
reports shipped with the package live apart, in ``report/shipped/<profile>/``
(tracked), so a user's own run never modifies the checkout; the README's findings
block is generated from the shipped ``results.json``.

PDF export needs Chromium; without it the HTML is still written and the error
says which package to install.
"""
from __future__ import annotations

import html as html_lib
import json
import os
import re
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter
from nbconvert.exporters.webpdf import WebPDFExporter
from playwright.async_api import BrowserType, Page
from traitlets.config import Config

from . import registry
from .analysis import fmt_ci, fmt_pct, fmt_said_2020
from .artifacts import atomic_path, copy_file, write_text
from .config import (
    README,
    REPORT_NOTEBOOK,
    SHIPPED_REPORTS,
    SHIPPED_RESULTS,
    TEMPLATES,
    chromium,
    output_root,
    report_dir,
)
from .errors import WBCError
from .params import check_encoding
from .tfenv import quiet_tensorflow


def execute_report(profile: str, runs_root=None, out_dir: Path | None = None) -> Path:
    """Run the report notebook with papermill for ``profile``; returns the executed notebook's path. The notebook
    writes ``results.json`` beside it from the facts it rendered, so the numbers and the report cannot differ."""
    out_dir = out_dir or report_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    quiet_tensorflow(out_dir / "kernel.log")  # the kernel's start-up lines stay off the console
    out = out_dir / "report.ipynb"
    with atomic_path(out) as tmp:
        pm.execute_notebook(str(REPORT_NOTEBOOK), str(tmp), cwd=str(REPORT_NOTEBOOK.parent), progress_bar=False,
                            parameters={"profile": profile, "runs_root": str(runs_root or ""),
                                        "results_json": str((out_dir / "results.json").resolve())},
                            kernel_name="python3")
    return out


def _html_exporter(cls=None):
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
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb, resources


def _with_title(nb):
    """Give the exported document the report's own title (its first heading), for the browser tab and the
    PDF's metadata."""
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            m = re.search(r"<h1>(.*?)</h1>", str(o.get("data", {}).get("text/html", "")), re.S)
            if m:
                nb.metadata["title"] = html_lib.unescape(m.group(1)).strip()
                return nb
    return nb


def export_html(executed: Path, out: Path) -> Path:
    nb = _with_title(nbformat.read(executed, as_version=4))
    body, _ = _html_exporter().from_notebook_node(nb)
    with atomic_path(out) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return out


def _webpdf_exporter():
    class SystemChromiumWebPDF(WebPDFExporter):
        """nbconvert's webpdf exporter, launching the system Chromium instead of a downloaded one."""

        def run_playwright(self, html):
            binary = chromium()
            if binary is None:
                raise WBCError("PDF export needs Chromium: install Debian's `chromium` package "
                               "(`make setup` does, as root), or set WBC_CHROMIUM to a Chromium binary.")
            original, original_pdf = BrowserType.launch, Page.pdf

            async def launch(self_, *a, **kw):
                kw.setdefault("executable_path", binary)
                return await original(self_, *a, **kw)

            async def pdf(self_, *a, **kw):  # the report's CSS sets A4 and its margins
                kw.setdefault("prefer_css_page_size", True)
                return await original_pdf(self_, *a, **kw)

            BrowserType.launch, Page.pdf = launch, pdf
            try:
                return super().run_playwright(html)
            finally:
                BrowserType.launch, Page.pdf = original, original_pdf

    exporter = _html_exporter(SystemChromiumWebPDF)
    exporter.disable_sandbox = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    exporter.browser_args = ["--disable-gpu", "--disable-background-networking", "--disable-component-update",
                             "--no-first-run", "--disable-sync"]
    return exporter


def export_pdf(executed: Path, out: Path) -> Path:
    nb = _with_title(nbformat.read(executed, as_version=4))
    pdf, _ = _webpdf_exporter().from_notebook_node(nb)
    with atomic_path(out) as tmp:
        tmp.write_bytes(pdf)
    return out


def build_report(profile: str, runs_root=None, pdf: bool = True) -> dict:
    """Execute and export the report; returns {"html": path, "pdf": path or None, "pdf_error": str or None}."""
    # the report notebook runs with report/ as its working directory: a relative runs folder means this one's
    runs_root = Path(runs_root).resolve() if runs_root else None
    out_dir = report_dir(profile)
    executed = execute_report(profile, runs_root, out_dir)
    html = export_html(executed, out_dir / "report.html")
    copy_file(html, output_root() / "report" / "report.html")
    results = out_dir / "results.json"  # written by the notebook, from the facts it rendered
    result = {"html": html, "pdf": None, "pdf_error": None, "results": results}
    if pdf:
        try:
            p = export_pdf(executed, out_dir / "report.pdf")
            copy_file(p, output_root() / "report" / "report.pdf")
            result["pdf"] = p
        except Exception as e:  # HTML stands on its own; say exactly what PDF needs
            result["pdf_error"] = f"{type(e).__name__}: {e}"
    return result


SHIPPED_FILES = ("report.html", "report.pdf", "results.json")


def ship_report(profile: str) -> list[Path]:
    """Copy a built report (HTML, PDF, results.json) to ``report/shipped/<profile>/``, the tracked reference the
    README quotes. Refuses a report that is not complete."""
    src = report_dir(profile)
    missing = [n for n in SHIPPED_FILES if not (src / n).exists()]
    if missing:
        raise WBCError(f"{src} lacks {', '.join(missing)}: build the report (with its PDF) before shipping it.")
    out = []
    for name in SHIPPED_FILES:
        out.append(copy_file(src / name, SHIPPED_REPORTS / profile / name))
    return out


# ----------------------------------------------------------------------------- headline numbers and the README

BLOCK_START = "<!-- findings:start"
BLOCK_END = "<!-- findings:end -->"


def _upgrade_results(results: dict) -> dict:
    """A results.json written when integer labels were "paper", read with today's encoding values."""
    def up(rows: list) -> list:
        return [{**r, **{k: check_encoding(r[k]) for k in ("encoding", "same_runs_as") if r.get(k)}} for r in rows]
    return {**results, **{k: up(results[k]) for k in ("recipes", "comparisons") if results.get(k)}}


def _said_2020(results: dict, spec) -> str:
    """What the 2020 report said of a loss ('about 70%') and the last validation figure of its log."""
    log = ((results.get("original") or {}).get(spec.name) or {}).get("logged_final_val_accuracy")
    return fmt_said_2020(spec.reported_2020, log)


def readme_block(results: dict) -> str:
    """The README's "what the study finds" block, written from a results.json (never by hand)."""
    results = _upgrade_results(results)
    c = results.get("counts", {})
    s = results.get("settings") or {}
    lines = [f"{BLOCK_START} generated by `python -m wbc_utils readme` from "
             f"report/shipped/{results['profile']}/results.json; do not edit -->"]
    if results.get("recipes"):
        size = "x".join(str(v) for v in s.get("image_size", []))
        done = sorted({int(r["seeds"]) for r in results["recipes"] if r.get("seeds")})
        planned = len(s.get("seeds_planned") or s.get("seeds", []))
        seeds = ("-".join(str(v) for v in (done[0], done[-1])) if len(done) > 1 else str(done[0])) if done else "0"
        seeds += " seeds per setting" + (f" of the {planned} planned (the study goes on)" if done and
                                         done[-1] < planned else "")
        lines += [f"Measured by the shipped `{results['profile']}` report ({size} pixels, {s.get('epochs')} epochs, "
                  f"{seeds}), on TEST's {c.get('unseen_cells')} cells that are not "
                  f"also in TRAIN; 95% intervals count the seeds and the cells:", "",
                  "| loss | targets | 2020 text (log) | 2020 metric (ours) | true accuracy [95% CI] | all of TEST | "
                  "collapsed |", "|---|---|---|---|---|---|---|"]
        for r in results["recipes"]:
            spec = registry.get(r["loss"])
            r = {**r, **{k: check_encoding(r[k]) for k in ("encoding", "same_runs_as") if r.get(k)}}  # "paper" once
            same = r.get("same_runs_as") == registry.INTEGER
            integer = r["encoding"] == registry.INTEGER
            lines.append(f"| {spec.short} | {registry.ENCODING_SHORT[r['encoding']]} | "
                         f"{_said_2020(results, spec) if integer else '-'} | "
                         f"{fmt_pct(r.get('paper_metric_test_mean'))} | "
                         f"{fmt_ci(r.get('unseen'), r.get('unseen_lo'), r.get('unseen_hi'))} | "
                         f"{fmt_ci(r.get('test'), r.get('test_lo'), r.get('test_hi'))} | "
                         f"{'same runs' if same else str(r.get('collapsed')) + '/' + str(r.get('finished'))} |")
        lines.append("")
        for cmp in sorted(results.get("comparisons", []), key=lambda c: c["encoding"] != registry.ONEHOT):
            targets = registry.ENCODING_WORDS[cmp["encoding"]].capitalize()
            unpaired = (f"; unpaired [{100 * cmp['unpaired_lo']:+.1f}, {100 * cmp['unpaired_hi']:+.1f}]"
                        if cmp.get("paired") and cmp.get("unpaired_lo") is not None else "")
            collapsed = (f"; collapsed {cmp['collapsed_a']}/{cmp['n_a']} vs {cmp['collapsed_b']}/{cmp['n_b']}"
                         + (f" (paired on seeds, McNemar p = {cmp['mcnemar_p']:.2g}; Fisher p = {cmp['fisher_p']:.2g})"
                            if cmp.get("mcnemar_p") is not None and cmp.get("fisher_p") is not None else
                            f" (Fisher p = {cmp['fisher_p']:.2g})" if cmp.get("fisher_p") is not None else "")
                         + (f"; the runs that did not collapse {100 * cmp['learned_diff']:+.1f} "
                            f"[{100 * cmp['learned_lo']:+.1f}, {100 * cmp['learned_hi']:+.1f}], "
                            f"{cmp['learned_words']}" if cmp.get("learned_diff") is not None
                            and cmp["learned_diff"] == cmp["learned_diff"] else "")
                         if cmp.get("collapsed_a") or cmp.get("collapsed_b") else "")
            detectable = f"; detectable {100 * cmp['mde']:.1f} points" if cmp.get("mde") is not None else ""
            lines.append(f"- {targets}, {cmp['comparison']}: {100 * cmp['diff']:+.1f} points "
                         f"[{100 * cmp['lo']:+.1f}, {100 * cmp['hi']:+.1f}], {cmp['words']}{unpaired}"
                         f"{detectable}{collapsed}.")
    o = results.get("original", {})
    if o.get("crossentropy"):
        ce = o["crossentropy"]
        split = results.get("original_split", "TEST")
        lines.append(f"- The 2020 cross-entropy weights, re-scored on {'all of TEST' if split == 'TEST' else split}: "
                     f"{fmt_ci(ce['true_accuracy'], ce['true_lo'], ce['true_hi'])} (its log: "
                     f"{fmt_pct(ce['logged_final_val_accuracy'])}); on 0-1 pixels "
                     f"{fmt_pct(ce.get('unit_inputs_accuracy'))}.")
    if o.get("mse") and o.get("huber"):
        lines.append(f"- The 2020 MSE and Huber '25%': the share of predictions of class 0 "
                     f"({fmt_pct(o['mse']['recomputed_2020_metric'])}, {fmt_pct(o['huber']['recomputed_2020_metric'])}"
                     f" recomputed); true accuracy {fmt_pct(o['mse']['true_accuracy'])} and "
                     f"{fmt_pct(o['huber']['true_accuracy'])}.")
    here = results.get("collapse_here") or []
    ref = [r for r in here if r.get("is_2020")]
    if ref:
        others = [r for r in here if not r.get("is_2020")]
        lines.append(f"- Collapse in this profile (cross-entropy, integer labels, same seeds): the 2020 rate 0.001 "
                     f"collapsed in {ref[0]['collapsed']}/{ref[0]['runs']} runs; " + "; ".join(
                         f"{x['setting'].replace('CE, integer labels, ', '')} {x['collapsed']}/{x['runs']}"
                         + (f" (Fisher p = {x['fisher_p_vs_2020']:.2g})" if x.get("fisher_p_vs_2020") is not None
                            else "") for x in others) + ".")
    for r in results.get("collapse", []):
        if r.get("is_2020"):
            others = [x for x in results["collapse"] if not x.get("is_2020")]
            name = lambda x: x["setting"].replace("CE, integer labels, ", "")  # noqa: E731
            resolved = [x for x in others if (x.get("p_holm") or 1) < 0.05]
            lines.append("- Collapse study (cross-entropy, integer labels): the 2020 recipe (lr 0.001) collapsed in "
                         f"{r['collapsed']}/{r['runs']} runs; " + "; ".join(
                             f"{name(x)} {x['collapsed']}/{x['runs']}"
                             + (f" (Holm-adjusted Fisher p = {x['p_holm']:.2g})" if x.get("p_holm") is not None
                                else "") for x in others)
                         + (". Resolved: " + ", ".join(name(x) for x in resolved) if resolved
                            else ". No difference from the 2020 recipe is resolved") + ".")
    b = results.get("best")
    if b:
        lab = (f"chosen by a {b['folds']}-fold lab over TRAIN's same-cell clusters, " if b.get("folds") else "")
        means = (f"mean over seeds {fmt_pct(b['mean_unseen'])} on unseen TEST cells"
                 + (f" and {fmt_pct(b['mean_simple'])} on TEST_SIMPLE's distinct slides" if b.get("mean_simple")
                    is not None else "") + "; " if b.get("mean_unseen") is not None else "")
        lines.append(f"- Beyond the paper (`wbcnet`, {lab}{b['seeds']} seeds): {means}seed-pooled "
                     f"{fmt_ci(b['unseen'], b['unseen_lo'], b['unseen_hi'])}"
                     f" on unseen TEST cells (one vote per cell: "
                     f"{fmt_ci(b.get('cell'), b.get('cell_lo'), b.get('cell_hi'))})"
                     f", {fmt_ci(b['test'], b['test_lo'], b['test_hi'])} on all of TEST"
                     + (f", {fmt_ci(b['simple'], b['simple_lo'], b['simple_hi'])} on TEST_SIMPLE's distinct slides"
                        if b.get("simple") is not None else "") + ".")
    lines.append(BLOCK_END)
    return "\n".join(lines)


def update_readme(results_path: Path = SHIPPED_RESULTS, readme: Path = README, check: bool = False) -> bool:
    """Rewrite the README's findings block from ``results_path``; with ``check``, only say whether it is
    current. Returns True when the README already matched."""
    text = readme.read_text(encoding="utf-8")
    if BLOCK_START not in text or BLOCK_END not in text:
        raise WBCError(f"{readme} has no findings block ({BLOCK_START} ... {BLOCK_END}): add the two markers "
                       "where the block belongs.")
    block = readme_block(json.loads(Path(results_path).read_text(encoding="utf-8")))
    start = text.index(BLOCK_START)
    end = text.index(BLOCK_END) + len(BLOCK_END)
    current = text[start:end] == block
    if not current and not check:
        write_text(readme, text[:start] + block + text[end:])
    return current
