"""The report's sections, written from run artifacts only: prose, numbered tables and numbered figures.

``report/report.ipynb`` stays thin: it loads a :class:`Report` and shows its
sections one per cell. Every number here is read from a study's files
(``metrics.json``, ``predictions.csv``, ``history.csv``, ``original-2020.json``)
through :mod:`wbc_utils.analysis`; the prose around it is conditional on
what those numbers say (a verdict is written only where its interval
excludes 0). Sections render to HTML with the layout a printed page needs:
a heading is kept with what follows it, figures and tables are not split,
interval cells do not wrap.

:func:`findings` gives the headline numbers as a dictionary; the report
command writes them to ``report/<profile>/results.json``, and the README's
"what the study finds" block is generated from that file.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import inspect
import io
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mistune
import numpy as np
import pandas as pd
from IPython.display import HTML, display
from scipy.stats import mannwhitneyu

from . import CLASSES, beyond, registry
from . import analysis as an
from .analysis import fmt_ci, fmt_diff, fmt_p, fmt_pct
from .beyond import lab_and_final
from .config import REFERENCE_PROFILE, RESULTS
from .data import build_manifest, run_split
from .evaluation import COLLAPSE_LOSS_TOL, COLLAPSE_SPREAD_MAX
from .figures import data as data_figures
from .figures import final as final_figures
from .figures import model as model_figures
from .figures import study as study_figures
from .model import build_model, paper_param_count
from .registry import ENCODING_SHORT, INTEGER, ONEHOT, losses_2020
from .runs import Run, load_study, profile_of, study_record
from .saliency import examples_per_class, load_model
from .slides import find_originals, load_pairs
from .stats import EQUIVALENCE_MARGINS

#: Links the report cites.
LINKS = {
    "repo2020": "https://github.com/tapphughesn/COMP562FinalProject",
    "keras_metric": "https://github.com/tensorflow/tensorflow/blob/v2.1.0/tensorflow/python/keras/engine/"
                    "training_utils.py",
    "dataset": "https://www.kaggle.com/datasets/paultimothymooney/blood-cells",
    "dataset_code": "https://www.kaggle.com/datasets/paultimothymooney/blood-cells/code",
    "source_repo": "https://github.com/dhruvp/wbc-classification",
    "guo2017": "https://proceedings.mlr.press/v70/guo17a.html",
}

#: Resolution of the report's figures: sharp on an A4 page, and a report under 5 MB.
FIGURE_DPI = 110

STYLE = """<style>
.wbc { font-size: 10.5pt; line-height: 1.45; }
.wbc h1 { font-size: 19pt; margin: 0 0 6pt 0; }
.wbc h2 { font-size: 14.5pt; margin: 16pt 0 5pt 0; }
.wbc h3 { font-size: 12pt; margin: 12pt 0 4pt 0; }
.wbc h1, .wbc h2, .wbc h3 { break-after: avoid; page-break-after: avoid; }
.wbc .keep { break-inside: avoid; page-break-inside: avoid; }
.wbc figure { margin: 6pt 0 10pt 0; break-inside: avoid; page-break-inside: avoid; }
.wbc figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
.wbc figcaption, .wbc .caption { font-size: 9pt; color: #333; margin: 3pt 0 6pt 0; }
.wbc table.wbc-table { border-collapse: collapse; font-size: 8.6pt; margin: 2pt 0 8pt 0; }
.wbc table.wbc-table th { text-align: left; border-bottom: 1px solid #444; padding: 2pt 5pt; vertical-align: bottom; }
.wbc table.wbc-table td { border-bottom: 1px solid #ddd; padding: 2pt 5pt; vertical-align: top; text-align: left; }
.wbc table.wbc-table th { text-align: left; }
.wbc table.wbc-table td.num { white-space: nowrap; }
.wbc table.claims { width: 100%; }
.wbc table.small { font-size: 7.4pt; }
.wbc table.claims td { white-space: normal; }
.wbc table.claims td:nth-child(1) { width: 24%; } .wbc table.claims td:nth-child(2) { width: 24%; }
.wbc table.claims tr { break-inside: avoid; page-break-inside: avoid; }
/* JupyterLab keeps each cell's output on one page; a report section is longer than that */
.jp-OutputArea-child, .jp-Cell, .jp-Cell-outputWrapper { break-inside: auto !important; page-break-inside: auto !important; }
.wbc .note { font-size: 9pt; color: #444; }
@page { size: A4; margin: 14mm 13mm 14mm 13mm; }
@media print { .wbc { font-size: 10pt; } }
</style>"""


# ----------------------------------------------------------------------------- rendering


def _md(text: str) -> str:
    return mistune.html(text)


def _fig_html(fig, width: float = 100.0) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" style="width:{width:.0f}%" alt="figure">'


class Doc:
    """Blocks of HTML with figure and table numbering; a heading is kept with the block after it."""

    def __init__(self) -> None:
        self.sections: dict[str, list[str]] = {}
        self.current = ""
        self.n_fig = 0
        self.n_tab = 0
        self._heading: str | None = None

    def section(self, name: str) -> None:
        self._flush()
        self.current = name
        self.sections.setdefault(name, [])

    def _emit(self, block: str) -> None:
        if self._heading is not None:
            block = f'<div class="keep">{self._heading}{block}</div>'
            self._heading = None
        self.sections[self.current].append(block)

    def _flush(self) -> None:
        if self._heading is not None and self.current:
            self.sections[self.current].append(self._heading)
            self._heading = None

    def h(self, level: int, text: str) -> None:
        self._flush()
        self._heading = f"<h{level}>{html.escape(text)}</h{level}>"

    def md(self, text: str) -> None:
        self._emit(_md(inspect.cleandoc(text)))

    def raw(self, block: str) -> None:
        self._emit(block)

    def figure(self, fig, caption: str, width: float = 100.0) -> int:
        """A numbered figure with its caption (Markdown); returns its number."""
        if fig is None:
            return 0
        self.n_fig += 1
        cap = _md(f"**Figure {self.n_fig}.** {caption}").strip()
        self._emit(f"<figure>{_fig_html(fig, width)}<figcaption>{cap}</figcaption></figure>")
        return self.n_fig

    def table(self, frame, caption: str, cls: str = "", keep: bool = True) -> int:
        """A numbered table (caption above); cells holding a percentage or an interval do not wrap."""
        if frame is None or len(frame) == 0:
            return 0
        self.n_tab += 1
        cap = _md(f"**Table {self.n_tab}.** {caption}").strip()
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        rows = []
        for r in frame.itertuples(index=False):
            cells = []
            for v in r:
                s = "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                num = any(ch.isdigit() for ch in s) and len(s) <= 26
                cells.append(f'<td{" class=num" if num else ""}>{_inline(s)}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        tab = f'<table class="wbc-table {cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        if keep:
            self._emit(f'<div class="keep"><div class="caption">{cap}</div>{tab}</div>')
        else:  # a long table may break across pages; its heading stays with its caption
            self._emit(f'<div class="caption">{cap}</div>')
            self.sections[self.current].append(tab)
        return self.n_tab

    def html(self, name: str) -> str:
        self._flush()
        return '<div class="wbc">' + "\n".join(self.sections.get(name, [])) + "</div>"


def _number(n: int) -> str:
    """'two', 'three', ... (digits from eleven on)."""
    words = "zero one two three four five six seven eight nine ten".split()
    return words[n] if 0 <= n < len(words) else str(n)


def _and(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _inline(s: str) -> str:
    """Table cell text: escaped, with **bold** and `code` kept."""
    if s.strip() in ("", "-"):
        return html.escape(s)  # "-" alone would be read as a list item
    out = _md(s).strip()
    if out.startswith("<p>") and out.endswith("</p>") and out.count("<p>") == 1:
        out = out[3:-4]
    return out


# ----------------------------------------------------------------------------- the report


@dataclasses.dataclass
class Report:
    """Everything the report shows, loaded once from a study's artifacts, rendered section by section."""

    profile: str
    runs_root: Any = None
    best_profile: str = "best"
    collapse_profile: str = "collapse"
    doc: Doc = dataclasses.field(default_factory=Doc)
    data: dict = dataclasses.field(default_factory=dict)

    ORDER = ("title", "abstract", "claims", "limitations", "intro", "data", "methods", "results", "discussion",
             "conclusion", "beyond", "changes", "appendix")

    @classmethod
    def load(cls, profile: str, runs_root=None, best_profile: str = "best", collapse_profile: str = "collapse",
             loss_profile: str = "") -> Report:
        rep = cls(profile=profile, runs_root=runs_root or None, best_profile=best_profile,
                  collapse_profile=collapse_profile)
        rep._load(loss_profile)
        for name in cls.ORDER:
            rep.doc.section(name)
            getattr(rep, f"_s_{name}")()
        rep.doc._flush()
        return rep

    def show(self, name: str) -> None:
        """Display one section (in a notebook; exported HTML and PDF keep it)."""

        body = self.doc.html(name)
        if name == "title":
            body = STYLE + body
        if body.strip() not in ('<div class="wbc"></div>',):
            display(HTML(body))

    def html(self) -> str:
        return STYLE + "\n".join(self.doc.html(n) for n in self.ORDER)

    # ------------------------------------------------------------------ loading

    def _load(self, loss_profile: str) -> None:
        d = self.data
        root = self.runs_root
        d["manifest"] = build_manifest()
        record = study_record(self.profile, root)
        prof = profile_of(self.profile, record) if record is not None else None
        if prof is not None and prof.kind == "lab":  # a lab's report: the loss study beside it is another profile's
            self.best_profile = self.profile
            self.profile = loss_profile or ("quick" if study_record("quick", root) is not None else "")
        d["has_losses"] = bool(self.profile) and study_record(self.profile, root) is not None
        if d["has_losses"]:
            study = load_study(self.profile, root)
            d.update(study=study, pdir=study.path, allruns=study.runs, metrics=study.metrics,
                     histories=study.histories, summary=study.main, controls=study.controls)
            d["settings"] = study.settings
            d["orig"] = study.original()
            d["losses"] = an.losses_of(d["summary"])
            d["groups"] = an.group_table(d["summary"])
            d["paired"] = an.paired_table(d["summary"])
            d["encoding"] = an.encoding_effect(d["summary"])
            d["collapse_quick"] = an.collapse_table(study.runs[study.runs.loss == "crossentropy"])
            pilot = d["settings"].get("pilot")
            d["pilot"] = pilot_of(pilot, root) or pilot_of(pilot, RESULTS)  # the pilot ships in results/
            d["any_metrics"] = next(iter(study.metrics.values()), {})
        d["collapse"] = None
        if self.collapse_profile and self.collapse_profile != self.profile and \
                study_record(self.collapse_profile, root) is not None:
            c = load_study(self.collapse_profile, root)
            d["collapse"] = {"allruns": c.runs, "histories": c.histories, "table": an.collapse_table(c.runs),
                             "settings": c.settings}
        elif d["has_losses"] and self.profile == self.collapse_profile:
            d["collapse"] = {"allruns": d["allruns"], "histories": d["histories"],
                             "table": an.collapse_table(d["allruns"]), "settings": d["settings"]}
        d["best"] = lab_and_final(self.best_profile, root) if self.best_profile else None
        d["has_best"] = d["best"] is not None and len(d["best"]["final_runs"]) > 0
        d["best_findings"] = best_findings(d["best"]) if d["has_best"] else None

    # ------------------------------------------------------------------ helpers

    def g(self, loss: str, enc: str, col: str, default=np.nan):
        gt = self.data.get("groups")
        if gt is None or gt.empty:
            return default
        r = gt[(gt["loss"] == loss) & (gt["encoding"] == enc)]
        return r.iloc[0][col] if len(r) and col in r.columns else default

    def acc(self, loss: str, enc: str, scope: str = "unseen") -> str:
        return fmt_ci(self.g(loss, enc, scope), self.g(loss, enc, f"{scope}_lo"), self.g(loss, enc, f"{scope}_hi"))

    def seeds(self, loss: str, enc: str) -> int:
        v = self.g(loss, enc, "seeds", 0)
        return int(v) if v == v else 0

    def pair(self, enc: str, a: str, b: str) -> dict:
        pt = self.data.get("paired")
        if pt is None or pt.empty:
            return {}
        r = pt[(pt["encoding"] == enc) & (pt["a"] == a) & (pt["b"] == b)]
        return r.iloc[0].to_dict() if len(r) else {}

    def orig_row(self, loss: str) -> dict:
        o = self.data.get("orig")
        if not o or not o.get("models", {}).get(loss):
            return {}
        return an.original_table(o).set_index("loss").loc[loss].to_dict()

    def _reproduced(self) -> tuple[bool | None, bool]:
        """Is the 2020 cross-entropy figure reproduced (a) by its own weights: the re-score's interval holds the
        logged figure (None without weights); (b) by training here: this profile's interval holds the ~70%?"""
        ce = self.orig_row("crossentropy")
        weights = None if not ce else bool(ce["true_lo"] <= ce["logged_final_val_accuracy"] <= ce["true_hi"])
        claimed = registry.get("crossentropy").reported_2020
        trained = bool(self.g("crossentropy", INTEGER, "test_lo") <= claimed <= self.g("crossentropy", INTEGER, "test_hi"))
        return weights, trained

    def counts(self) -> dict:
        """Files, slides, cells per split; cells shared by TRAIN and TEST; unmapped files (computed once)."""
        if "counts" in self.data:
            return self.data["counts"]
        f = self.data["manifest"].frame
        out = {}
        for split, g in f.groupby("split"):
            out[split] = {"files": len(g), "slides": int(g["slide"].nunique()), "cells": int(g["cell"].nunique()),
                          "per_class_cells": {c: int(g.loc[g["class"] == c, "cell"].nunique()) for c in CLASSES}}
        test = f[f["split"] == "TEST"]
        out["shared_cells"] = int(test.loc[test["shared"], "cell"].nunique())
        out["shared_images"] = int(test["shared"].sum())
        out["unseen_cells"] = int(test.loc[~test["shared"], "cell"].nunique())
        out["unseen_images"] = int((~test["shared"]).sum())
        unseen = test[~test["shared"]]
        out["unseen_per_class_cells"] = {c_: int(unseen.loc[unseen["class"] == c_, "cell"].nunique()) for c_ in CLASSES}
        train = f[f["split"] == "TRAIN"]
        per_k = train.dropna(subset=["k", "slide"]).groupby(["class", "k"])["slide"].nunique()
        out["kgroup_slides"] = [int(per_k.min()), int(per_k.max())] if len(per_k) else None
        out["sources"] = dict(self.data["manifest"].sources)
        self.data["counts"] = out
        return out

    # ------------------------------------------------------------------ sections

    def _s_title(self) -> None:
        d, doc = self.data, self.doc
        c = self.counts()
        sw = (d.get("any_metrics") or {}).get("software", {})
        if not sw and d.get("has_best"):

            sw = Run(d["best"]["final_runs"].iloc[0].run_dir).metrics().get("software", {})
        title = ("Loss functions for white-blood-cell classification: the 2020 study, reproduced and corrected"
                 if d["has_losses"] else "White-blood-cell classification beyond the 2020 study")
        doc.raw(f"<h1>{html.escape(title)}</h1>")
        lines = []
        if d["has_losses"]:
            ar = d["allruns"]
            s = d["settings"]
            prof = d["study"].plan
            planned = len(prof.runs()) if prof is not None else len(ar)
            done = int((ar.status == "finished").sum())
            # the plan's own words where the profile grew after its record (more seeds planned than ran so far)
            said = {"description": prof.description, "trades": prof.trades} if prof is not None else s
            lines.append(f"**Profile `{self.profile}`**: {said.get('description', '')}. "
                         f"{done} of the {planned} planned runs finished "
                         f"({int((ar.status == 'failed').sum())} failed, {int((ar.status == 'incomplete').sum())} "
                         f"incomplete); {len(d['controls'])} of them are control runs."
                         + (f" **The study goes on**: this report rests on the runs finished so far (seeds "
                            f"{_seed_span(ar[ar.status == 'finished']['seed'])}), every setting on the same seeds; "
                            f"`make report PROFILE={self.profile}` trains the rest and rebuilds it."
                            if done < planned else "")
                         + f" What this profile trades away: {said.get('trades') or 'n/a'}.")
        lines.append(f"**Data**: TRAIN {c['TRAIN']['files']:,} images of {c['TRAIN']['slides']} slides "
                     f"({c['TRAIN']['cells']} independent cells); TEST {c['TEST']['files']:,} images of "
                     f"{c['TEST']['slides']} slides ({c['TEST']['cells']} cells, {c['shared_cells']} of them also in "
                     f"TRAIN)" + (f"; TEST_SIMPLE {c['TEST_SIMPLE']['files']} images of {c['TEST_SIMPLE']['slides']} "
                                  f"slides" if "TEST_SIMPLE" in c else "") + ".")
        devices = sorted({m.get("software", {}).get("device") for m in (d.get("metrics") or {}).values()} - {None})
        device = "; ".join(devices) if devices else (sw.get("device") or "a CPU (not recorded by these runs)")
        lines.append("**Software**: " + ", ".join(f"{k} {v}" for k, v in sw.items() if k not in ("platform", "device"))
                     + f"; trained on: {device}. Generated {datetime.date.today().isoformat()}.")
        lines.append("*Scope: these models have seen one lab's images only (the BCCD smears, 640x480, resized to "
                     "320x240). They are a teaching and research study, not a diagnostic tool.*")
        doc.md("\n\n".join(lines))

    def _s_abstract(self) -> None:
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return
        doc.h(2, "Abstract")
        ce = self.orig_row("crossentropy")
        mse = self.orig_row("mse")
        c = self.counts()
        parts = ["A 2020 course report trained one small convolutional network on the *Blood Cell Images* dataset "
                 "three times, once per loss, and reported about 70% validation accuracy with cross-entropy and "
                 "about 25% with mean squared error (MSE) and Huber."]
        if ce:
            split = d["orig"]["split"]
            parts.append(f"Re-scored on {'all of TEST' if split == 'TEST' else split}, its own cross-entropy weights give "
                         f"{fmt_ci(ce['true_accuracy'], ce['true_lo'], ce['true_hi'])} (its log: "
                         f"{fmt_pct(ce['logged_final_val_accuracy'])}).")
        if mse:
            parts.append(f"Its 25% for MSE and Huber is not an accuracy: the 2020 code's metric counted predictions "
                         f"of one class ({fmt_pct(mse['recomputed_2020_metric'])} for MSE, recomputed from its "
                         f"weights), and those two losses were given integer labels.")
        parts.append(f"TEST's {c['TEST']['files']:,} images are augmented copies of {c['TEST']['slides']} slides "
                     f"showing {c['TEST']['cells']} independent cells, {c['shared_cells']} of which are also in TRAIN; "
                     f"headline figures are on the {c['unseen_cells']} cells a model has not seen, with intervals that "
                     f"count both the cells and the training seeds as sources of variation.")
        parts.append(self._retrained_sentence())
        txt = self._collapse_sentence(short=True)
        if txt:
            parts.append(txt)
        doc.md(" ".join(parts))

    def _retrained_sentence(self) -> str:
        """Every loss this profile trained, in one sentence: the first (in registry order: cross-entropy) with
        integer labels as in 2020, the others with one-hot targets, and the first minus each other, paired."""
        losses = self.data.get("losses") or []
        n = self.seeds(losses[0], INTEGER) if losses else 0
        if not n:
            return ""
        s = self.data["settings"]
        size = "x".join(str(v) for v in s.get("image_size", []))
        ref, others = registry.get(losses[0]), [registry.get(l) for l in losses[1:]]
        reach = [f"{o.short}{' reaches' if i == 0 else ''} {self.acc(o.name, ONEHOT)}" for i, o in enumerate(others)]
        pairs = [(o, self.pair(ONEHOT, ref.name, o.name)) for o in others]
        diffs = "; ".join(f"{ref.words + ' ' if i == 0 else ''}minus {o.short}: {fmt_diff(p)}, "
                          f"{an.verdict_words(p, ref.words, o.short)}" for i, (o, p) in enumerate(pairs) if p)
        # a mean over runs of which some collapsed describes none of them: say how many did, and the rest apart
        split = [f"{o.short} collapsed to a constant output on {p['collapsed_b']} of {p['n_b']} seeds "
                 f"({ref.words} on {p['collapsed_a']}); on the seeds where neither did, {ref.words} minus {o.short} "
                 f"is {fmt_diff({k[len('learned_'):]: v for k, v in p.items() if k.startswith('learned_')})}"
                 for o, p in pairs if p and p.get("collapsed_b") and p.get("learned_diff") == p.get("learned_diff")]
        return (f"Retrained at reduced size ({size} pixels, {s.get('epochs')} epochs, {n} seeds per setting), "
                f"{ref.words} reaches {self.acc(ref.name, INTEGER)}"
                + (f"; with one-hot targets {_and(reach)}" if reach else "")
                + (f" ({diffs})" if diffs and all(p for _, p in pairs) else "") + "."
                + (" With one-hot targets, " + "; ".join(split) + "." if split else ""))

    def _collapse_sentence(self, short: bool = False) -> str:
        """The collapse study in one sentence: the 2020 recipe's count, and each change's, with Holm-adjusted
        Fisher tests; a change is said to matter only where its adjusted p < 0.05."""
        ct = (self.data.get("collapse") or {}).get("table")
        if ct is None or not len(ct) or not ct["is_2020"].any():
            return ""
        r0 = ct[ct["is_2020"]].iloc[0]
        others = ct[~ct["is_2020"]]
        words = f"{int(r0.collapsed)} of {int(r0.runs)}"
        if short:
            txt = (f"In the collapse study the 2020 recipe collapsed to a constant output in {words} runs"
                   + (" (" + ", ".join(f"{r.setting.split(', ', 2)[-1]}: {int(r.collapsed)}/{int(r.runs)}"
                                       for r in others.itertuples()) + ")" if len(others) else ""))
        else:
            txt = (f"In the collapse study the 2020 recipe collapsed to a constant output in {words} runs"
                   + ("; " + "; ".join(f"with {r.setting.split(', ', 2)[-1]}, {int(r.collapsed)} of {int(r.runs)} "
                                       f"(Holm-adjusted Fisher {fmt_p(r.p_holm)})" for r in others.itertuples())
                      if len(others) else ""))
        sig = others[others["p_holm"] < 0.05]
        if len(sig):
            txt += ". Resolved: " + "; ".join(
                f"{r.setting.split(', ', 2)[-1]} collapses {'less' if r.collapse_rate < r0.collapsed / r0.runs else 'more'}"
                f" often than the 2020 recipe" for r in sig.itertuples())
        else:
            txt += ". No change resolves a difference from the 2020 recipe at these seeds"
        return txt + "."

    def _s_claims(self) -> None:
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return

        doc.h(2, "What the 2020 report claimed, and what stands")
        ce, mse, hub = self.orig_row("crossentropy"), self.orig_row("mse"), self.orig_row("huber")
        rows = []
        n_ce = self.seeds("crossentropy", INTEGER)
        size = "x".join(str(v) for v in d["settings"].get("image_size", []))
        split = (d.get("orig") or {}).get("split", "TEST")
        where = "all of TEST" if split == "TEST" else split
        ev = f"{fmt_ci(ce['true_accuracy'], ce['true_lo'], ce['true_hi'])} re-scoring its weights on {where} (log: {fmt_pct(ce['logged_final_val_accuracy'])})" if ce else "the 2020 weights were not available"
        weights_ok, trained_ok = self._reproduced()
        from_weights = {True: "**Reproduced** from its weights", False: "**Not reproduced** from its weights",
                        None: "Not checked (no weights)"}[weights_ok]
        # an interval that holds the claim does not contradict it; it reproduces it only when the mean is near it
        mean_side = "lower" if self.g("crossentropy", INTEGER, "test") < registry.get("crossentropy").reported_2020 \
            else "not lower"
        trained = (f"**not contradicted** by training here (its interval holds it; its mean is {mean_side})"
                   if trained_ok else "**not reproduced** by training at this profile's size")
        rows.append(("Cross-entropy reaches about 70% validation accuracy", f"{from_weights}; {trained}",
                     f"{ev}; trained here ({size}, {n_ce} seeds): {self.acc('crossentropy', INTEGER, 'test')} on all of "
                     f"TEST, {self.acc('crossentropy', INTEGER)} on unseen cells"))
        tr = self.g("crossentropy", INTEGER, "final_train_accuracy_mean")
        in_log = ce and ce.get("logged_final_train_accuracy", 0) >= 0.995
        rows.append(("Cross-entropy's training accuracy reaches 100%",
                     ("**Reproduced** in its log" if in_log else "**Not found** in its log")
                     + ("; **reproduced**" if tr >= 0.995 else "; **not reproduced**") + " at this profile's size",
                     (f"2020 log: {fmt_pct(ce.get('logged_final_train_accuracy'))} at epoch 100; " if ce else "")
                     + f"here: {fmt_pct(tr)} after {d['settings'].get('epochs')} epochs (mean of {n_ce} seeds)"))
        if mse and hub:
            rows.append(("MSE and Huber reach about 25%",
                         "**Corrected**: a metric artefact, not an accuracy",
                         f"the logged 25% is the share of predictions of class 0 ({fmt_pct(mse['recomputed_2020_metric'])} "
                         f"and {fmt_pct(hub['recomputed_2020_metric'])} recomputed from the weights: Keras's "
                         f"[metric selection]({LINKS['keras_metric']}) picks `categorical_accuracy` for a non-sparse "
                         f"loss); true accuracy {fmt_ci(mse['true_accuracy'], mse['true_lo'], mse['true_hi'])} and "
                         f"{fmt_ci(hub['true_accuracy'], hub['true_lo'], hub['true_hi'])}"))
        p1, p2 = self.pair(ONEHOT, "crossentropy", "mse"), self.pair(ONEHOT, "crossentropy", "huber")
        if p1 and p2:
            ce_better = [d for d in (p1, p2) if d["resolved"] and d["diff"] > 0]
            verdict = ("**Supported** with one-hot targets too: cross-entropy beats "
                       + " and ".join(n for n, d in (("MSE", p1), ("Huber", p2)) if d in ce_better)
                       if len(ce_better) == 2 else
                       "**Corrected**: with one-hot targets MSE and Huber are classification losses too; "
                       + ("cross-entropy beats " + " and ".join(n for n, d in (("MSE", p1), ("Huber", p2))
                                                                 if d in ce_better) + " only"
                          if ce_better else "no advantage of cross-entropy is resolved"))
            rows.append(("Cross-entropy is the loss to use; MSE and Huber fail", verdict,
                         f"MSE {self.acc('mse', ONEHOT)}, Huber {self.acc('huber', ONEHOT)} vs cross-entropy "
                         f"{self.acc('crossentropy', ONEHOT)}; CE - MSE {fmt_diff(p1)}: {an.verdict_words(p1, 'CE', 'MSE')}; "
                         f"CE - Huber {fmt_diff(p2)}: {an.verdict_words(p2, 'CE', 'Huber')}"))
        if ce and ce.get("unit_inputs_accuracy") == ce.get("unit_inputs_accuracy"):
            rows.append(("The images were normalised (its text)",
                         "**Not supported** by its weights",
                         f"raw 0-255 pixels reproduce the log ({fmt_pct(ce['true_accuracy'])} against "
                         f"{fmt_pct(ce['logged_final_val_accuracy'])}); the same weights on 0-1 pixels give "
                         f"{fmt_pct(ce['unit_inputs_accuracy'])}"))
        ct = (d.get("collapse") or {}).get("table")
        if ct is not None and len(ct) and ct["is_2020"].any():
            r0 = ct[ct["is_2020"]].iloc[0]
            lr = ct[ct["setting"].str.endswith("lr 0.0003")]
            ev = self._collapse_sentence()
            fewer = len(lr) and lr.iloc[0].p_holm < 0.05 and lr.iloc[0].collapse_rate < r0.collapsed / r0.runs
            verdict = ("**Supported** for the learning rate: at this size the 2020 rate collapses more often than 0.0003"
                       if fewer else "**Not resolved** by these seeds")
            rows.append(("Failure may come from unlucky initialisation with an improper learning rate", verdict, ev))
        frame = pd.DataFrame(rows, columns=["2020 claim", "verdict", "evidence (95% intervals over cells and seeds)"])
        doc.table(frame, "The 2020 report's claims against the evidence. *Reproduced*: the same figure is obtained; "
                  "*corrected*: the claim rests on a flaw this report identifies; *not supported*: its own artefacts "
                  "contradict it. Sections 4.4-4.8 give the details.", cls="claims", keep=False)

    def _s_limitations(self) -> None:
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return
        s = d["settings"]

        size = s.get("image_size", [240, 320])
        n_params = build_model(size).count_params()
        c = self.counts()
        doc.h(2, "Limitations")
        seeds = len(s.get("seeds", []))
        items = [
            f"**Reduced size.** The `{self.profile}` profile trains at {size[0]}x{size[1]} pixels "
            f"({n_params:,} parameters against the paper's {paper_param_count(240, 320):,} at 240x320), on "
            + (f"{s.get('train_subset'):,} TRAIN images" if s.get("train_subset") else "all of TRAIN")
            + f", for {s.get('epochs')} of 100 epochs, at Adam's learning rate {s.get('learning_rate')}. Its "
            "accuracies are not the paper's; its comparisons between losses are comparisons at this size. "
            "`make report PROFILE=paper` is the faithful set-up (hours on a GPU).",
            "**TEST is used for the curves.** As in 2020, TEST is the validation set drawn during training "
            "(section 4.2); nothing in the loss study is chosen on it. The *beyond the paper* section chooses its "
            "design on held-out TRAIN cells only.",
            f"**Cells shared by TRAIN and TEST.** {c['shared_cells']} of TEST's {c['TEST']['cells']} cells "
            f"({c['shared_images']} of its {c['TEST']['files']:,} images) are also in TRAIN, photographed on "
            "overlapping slides. Headline figures leave them out; all of TEST is reported beside them.",
            f"**Few seeds, few cells.** {seeds} seed{'s' * (seeds != 1)} per setting and {c['unseen_cells']} unseen "
            f"TEST cells (only {c['unseen_per_class_cells']['MONOCYTE']} monocytes and "
            f"{c['unseen_per_class_cells']['LYMPHOCYTE']} lymphocytes) bound what any comparison can resolve; "
            f"{c['unseen_per_class_cells']['MONOCYTE']} cells show little of the variation among monocytes. "
            "A difference is called resolved only where its interval excludes 0, and bounded only where the "
            "interval lies inside a margin fixed in advance." + (
                " With one seed, an interval is about one trained model, not its recipe." if seeds == 1 else ""),
            f"**An accuracy over images weighs cells unequally.** Each cell counts with its number of images: the "
            f"{c['unseen_per_class_cells']['MONOCYTE']} unseen monocyte cells carry about as many TEST images as the "
            f"{c['unseen_per_class_cells']['NEUTROPHIL']} neutrophil cells. The cell-level figures (one vote per "
            "cell) are reported beside every image-level one for that reason.",
            "**Drift between machines.** The same seed and code give the same result on one machine and thread "
            "count (to 1e-6), but not across CPUs or thread counts: floating-point reductions differ, and at this "
            "size a run's accuracy can move by several points. A single run's figure is therefore one draw; the "
            "intervals here include seed-to-seed variation, which is of the same kind.",
        ]
        if c["sources"].get("none"):
            items.append(f"**Unmapped files.** {c['sources']['none']} file(s) had no known source slide; each is "
                         "counted as a cell of its own, so intervals over them are image-level (too narrow).")
        doc.md("\n".join(f"- {t}" for t in items))

    def _s_intro(self) -> None:
        doc = self.doc
        c = self.counts()
        doc.h(2, "1. The 2020 study, from its own text and artefacts")
        ce = self.orig_row("crossentropy")
        doc.md(f"""
        In May 2020, a course report (Sarkar, Tapp-Hughes and Zhang Solis, *Using Neural Networks to Classify White
        Blood Cell Images*; code: [{LINKS['repo2020'].split('//')[1]}]({LINKS['repo2020']})) trained the encoder half
        of a U-Net (8 convolutions, 4 max-pools, Dense(4); {paper_param_count(240, 320):,} parameters at 240x320)
        three times on the Kaggle *Blood Cell Images* dataset, once per loss: sparse categorical cross-entropy from
        logits, mean squared error and Huber. Adam, batch 32, 100 epochs; TRAIN ({c['TRAIN']['files']:,} images) was
        fitted and TEST ({c['TEST']['files']:,}) served as the validation set. It reported about 70% validation accuracy with cross-entropy (training accuracy 100%) and
        about 25% with MSE and Huber, whose training accuracy also stayed near 25%, and concluded that cross-entropy
        is the loss to use and that its architecture may be ill-suited to the task.

        Its text proposes causes for the MSE and Huber results: too little data, too few epochs, "unlucky
        initialization of the model parameters combined with an improper learning rate", or a local minimum; and for
        cross-entropy, overfitting (100% training against 70% validation). It says NumPy was used to "shuffle and
        normalize the image data".

        Its repository keeps the three trained models (TensorFlow checkpoints after epoch 100) and their training
        logs. This report reads both (section 4.4). Two facts established there change the study's reading: its
        code gave MSE and Huber the integer class label as their target, and its "accuracy" for those two losses
        did not measure accuracy.
        """ + (f" Its images were not normalised: the weights reproduce the logged accuracy on raw 0-255 pixels "
               f"({fmt_pct(ce['true_accuracy'])} against {fmt_pct(ce['logged_final_val_accuracy'])}), not on 0-1 "
               f"pixels ({fmt_pct(ce['unit_inputs_accuracy'])})." if ce and ce.get("unit_inputs_accuracy") == ce.get("unit_inputs_accuracy") else ""))

    def _s_data(self) -> None:
        d, doc = self.data, self.doc
        c = self.counts()
        man = d["manifest"]
        doc.h(2, "2. Where the images come from")
        doc.md(f"""
        The dataset's {sum(c[s]['files'] for s in c if isinstance(c[s], dict) and 'files' in c[s]):,} images are
        augmented copies of a few hundred original slides (the BCCD smears, 640x480): each was made by rotating,
        shearing, zooming, shifting and flipping one original, then shrinking it to 320x240. This package matched
        every image to its original slide with OpenCV (SIFT keypoints, an affine fit, then the grey-level correlation
        between the image and the warped original; `python -m wbc_utils slides` rebuilds the mapping that ships with
        it). Slides that photograph overlapping fields of the same smear were found the same way; where the white
        cell coincides, they show the same physical cell and are merged into one *same-cell cluster*: the unit of
        every interval in this report.
        """)
        rows = []
        for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
            if split in c:
                rows.append({"split": split, "images": f"{c[split]['files']:,}", "slides": c[split]["slides"],
                             "independent cells": c[split]["cells"],
                             **{f"{k.lower()[:4]}. cells": v for k, v in c[split]["per_class_cells"].items()}})
        doc.table(pd.DataFrame(rows), f"Images, original slides and independent cells per split. {c['shared_cells']} "
                  f"cells are in both TRAIN and TEST ({c['shared_images']} TEST images); TEST without them has "
                  f"{c['unseen_cells']} cells ({c['unseen_images']:,} images), the *unseen* scope of every headline "
                  "figure.")
        originals = find_originals(man.images_root)
        # the sources this report's dataset was given (the shipped mapping, a dataset's own, or matched now)
        mapping = man.frame.rename(columns={"match_score": "score"})[["split", "class", "file", "slide", "score"]]
        if originals is not None:
            doc.figure(data_figures.slide_and_copies_figure(mapping, man.images_root, originals),
                       "One original slide (left) and some of the augmented images made from it. A model that has "
                       "seen one of these has, for the purpose of an accuracy, seen them all.", width=85)
        if (man.frame["class"] == "NEUTROPHIL").any() and man.frame["k"].notna().any():
            doc.figure(data_figures.kgroup_figure(mapping, man.images_root),
                       "The images of one `(class, k)` group of TRAIN (file names `_<k>_<n>.jpeg`), titled with the "
                       "slide each comes from: the `k` in a file name is not a source cell. An earlier version of this "
                       "package grouped by it; every interval, split and cell-level figure now uses the slides.", width=80)
        pairs = load_pairs()
        if originals is not None and len(pairs):
            doc.figure(data_figures.overlap_figure(pairs, originals),
                       f"Original slides that photograph overlapping fields ({len(pairs)} pairs; "
                       f"{int(pairs['same_cell'].sum())} show the same white cell, marked). Such slides are one "
                       "independent cell, and some of them sit on both sides of the TRAIN/TEST split.")
        simple = c.get("TEST_SIMPLE")
        if simple:
            doc.md(f"""
            **TEST_SIMPLE** holds the original slides shrunk 2x without augmentation: {simple['files']} files of
            {simple['slides']} distinct slides (a few slides appear twice, a few TEST slides not at all). It is scored
            per distinct slide: duplicates count once.

            **Consequences.** TEST's accuracy is an accuracy over {c['TEST']['cells']} cells, not
            {c['TEST']['files']:,} independent images; a validation split of TRAIN must split by same-cell cluster,
            or copies of one cell land on both sides; and the cells shared by TRAIN and TEST are left out of the
            headline figures.
            """)

    def _s_methods(self) -> None:
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return

        s = d["settings"]
        size = s.get("image_size", [240, 320])
        model = build_model(size)
        doc.h(2, "3. Methods")
        doc.md(f"""
        **Model.** The encoder half of a U-Net, as in 2020: eight 3x3 ReLU convolutions (4-8, 16-16, 32-32, 64-64
        filters), four 2x2 max-pools, Flatten, Dense(4). {paper_param_count(240, 320):,} parameters at 240x320,
        {model.count_params():,} at this profile's {size[0]}x{size[1]}. Pixels are fed raw (0-255), as the 2020
        weights show they were.

        **Training.** Adam (learning rate {s.get('learning_rate')}), batch {s.get('batch_size', 32)},
        {s.get('epochs')} epochs, {"all of TRAIN" if not s.get("train_subset") else f"a class-balanced subset of {s.get('train_subset'):,} TRAIN images"},
        seeds {", ".join(str(v) for v in s.get("seeds", []))}, {(d.get("any_metrics") or {}).get("precision_policy", "float32")}
        precision. As in 2020, TEST is the validation set whose curves are drawn during training.

        **Losses and target encodings.** The losses trained here: {self._losses_words()}. Each loss is trained under
        two encodings: *integer labels*, the class index 0-3 given to every loss as the 2020 code did (MSE and Huber
        then regress all four outputs onto the index), and *one-hot targets* compared with the softmax of the
        outputs, the correct formulation for MSE and Huber. {self._once_words()} {self._huber_words()}

        **Metrics.** *Accuracy* is the true argmax accuracy. The *2020 metric* is what the 2020 code's
        `metrics=["accuracy"]` printed: for MSE and Huber, Keras's [metric selection]({LINKS['keras_metric']})
        picked `categorical_accuracy`, which compares the argmax of the prediction with the argmax of a one-column
        integer label, always 0. *Cell accuracy* gives each cell one vote, the majority of its images' predictions.
        Headline figures are on TEST's unseen cells; all of TEST is reported beside them.

        **Intervals.** 95% intervals for a figure pooled over seeds count two sources of variation: the seeds (the
        spread of the per-seed figures) and TEST's same-cell clusters (their spread within each class, the classes
        weighted by their fixed share of the images, since the class mix is fixed by the dataset's design). The
        interval is the estimate +- Student's t times its standard error, with Satterthwaite's degrees of freedom:
        {self.counts()['unseen_per_class_cells']['MONOCYTE']} monocyte cells or {len(s.get('seeds', []))} seeds are few, and a normal or percentile-bootstrap interval would cover too little
        (simulated on TEST's design, `tests/test_stats.py`). Cells read entirely right or entirely wrong count as
        Bernoulli trials with a Jeffreys estimate, so a class whose few cells were all right still has an
        interval. Image-level accuracy weighs each cell by its number of images; cell-level accuracy gives each
        cell one vote. Differences between losses are paired on the same cells and, where both settings were
        trained from the same seeds, on the seeds too: a seed fixes the initial weights, the training images and
        the batch order, so the difference is computed seed by seed and the seed part of its variance is the spread
        of the per-seed differences (/ number of seeds, with one fewer degrees of freedom); a seed trained on one
        side only is left out (the verdict names it), and with fewer than two shared seeds the seeds count as
        independent runs. A difference is called **resolved** only when its interval excludes 0, and **bounded**
        ("no difference larger than X points") when its whole interval lies inside +-X, X the smallest of
        {", ".join(f"{x:g}" for x in EQUIVALENCE_MARGINS)} points (margins fixed before the runs; with a 95%
        interval this is two one-sided tests at 2.5% each); every verdict states its seeds, and each comparison the
        smallest difference its design detects with 80% power. The comparisons are reported unadjusted for their
        number (six between losses, two between encodings): read one resolved difference among them with that in
        mind. Single-run intervals (Appendix A) count the cells only.

        **Collapse.** One definition, used throughout: a run has *collapsed* when its training loss (the finished
        model's, on its training images in inference mode) is no better than the best constant prediction's (within {COLLAPSE_LOSS_TOL:.0%}; for cross-entropy on balanced
        classes that is ln 4 = 1.386) **and** its outputs vary across TEST images by less than
        {COLLAPSE_SPREAD_MAX:.0%} of the targets' spread. The share of TEST predicted as its most frequent class is
        reported beside it: a collapsed run's near-constant outputs can still split between classes by rounding.
        """)
        if d.get("pilot"):
            doc.md(self._pilot_text())
            self._pilot_table()


    def _losses_words(self) -> str:
        """'cross-entropy, mean squared error and Huber' (+ ' (not in the 2020 study)' after a loss of one's own)."""
        specs = [registry.get(l) for l in self.data.get("losses") or []]
        return _and([s.words + ("" if s.is_2020 else " (not in the 2020 study)") for s in specs]) if specs else "none"

    def _once_words(self) -> str:
        """Which losses are the same function under both encodings, and so trained once."""
        once = [registry.get(l).words for l in self.data.get("losses") or [] if registry.get(l).encodings_coincide]
        if not once:
            return ""
        one = len(once) == 1
        return (f"For {_and(once)} the two are the same function (a test checks it), so {'it is' if one else 'each is'} "
                "trained once, with integer labels, and those runs stand for both.")

    def _huber_words(self) -> str:
        """Why one-hot Huber and one-hot MSE train alike (when both ran with one-hot targets)."""
        losses = self.data.get("losses") or []
        if not {"mse", "huber"} <= set(losses) or ONEHOT not in set(self.data["summary"]["target_encoding"]):
            return ""
        return ("With one-hot targets every error (softmax output minus target) lies between -1 and 1, where Huber's "
                "loss with delta = 1 (Keras's default) is half the squared error: one-hot Huber is one-hot MSE at half "
                "the scale, and Adam's steps hardly depend on a loss's scale, so the two train almost alike from the "
                "same seed (their collapses fall on the same seeds). Their comparison checks this; it is not a "
                "second question. With integer labels the errors reach 3, and the two losses differ.")

    def _pilot_text(self) -> str:
        p = self.data.get("pilot")
        if not p:
            return ""
        c, s = p["choice"], self.data["settings"]
        follows = (c["learning_rate"] == s.get("learning_rate") and c["image_size"] == s.get("image_size")
                   and c["epochs"] == s.get("epochs") and c["seeds"] <= len(s.get("seeds", [])))
        return (f"**How the scale was chosen (the pilot, profile `{p['name']}`).** Before any run of this profile, "
                f"a pilot trained each candidate on TRAIN alone, with a fifth of TRAIN's same-cell clusters held out "
                f"as validation (another fifth per seed; the same for every candidate of a seed), for "
                f"{p['table']['epochs'].max()} epochs. A rule (`analysis.choose_design`) reads its table "
                f"(Table {self.doc.n_tab + 1}) at each candidate's last epoch: "
                + "; ".join(c["reasons"]) + ". "
                + "The rule changed while the pilot ran, each time with some of its validation results in view: "
                + "; ".join(f"*{what}* (with {when} in view): {how}" for what, when, how in an.PILOT_RULE_REVISIONS[1:])
                + ". No version of the rule reads TEST; the pilot's runs scored TEST at the end, as every run does "
                  "(`results/pilot/`), and those scores are used nowhere. "
                + ("This profile follows it." if follows else
                   "**This profile departs from it**: see its settings above.")
                + "".join(f"\n\n**A decision after the pilot: {what}** ({when}). {why}."
                          for prof, what, when, why in an.DESIGN_DECISIONS if prof == self.profile))

    def _pilot_table(self) -> None:
        p = self.data.get("pilot")
        if not p:
            return
        rows = [{"candidate": r.candidate,
                 "validation per seed (" + ", ".join(str(v) for v in r.seeds) + ")":
                     ", ".join(f"{100 * v:.1f}" for v in r.val_per_seed),
                 "mean [min, max]": f"{100 * r.val_mean:.1f}% [{100 * r.val_min:.1f}, {100 * r.val_max:.1f}]",
                 "plateau": f"epoch {int(r.plateau_epoch)} of {r.epochs}" if r.plateau_epoch == r.plateau_epoch
                 else "-", "learned": f"{r.learned}/{r.runs}" + (f" ({r.collapsed} collapsed)" if r.collapsed else ""),
                 "train acc.": fmt_pct(r.train_accuracy),
                 "s/epoch": f"{r.seconds_per_epoch:.0f}" if r.seconds_per_epoch == r.seconds_per_epoch else "-"}
                for r in p["table"].itertuples()]
        return self.doc.table(pd.DataFrame(rows), f"The pilot (profile `{p['name']}`): every candidate, on held-out "
                              "TRAIN cells (final-epoch validation accuracy, %), negative results included. *Plateau*: "
                              "where the seed-mean validation curve, smoothed over 3 epochs, comes within 2 points of "
                              "its best. *Learned*: seeds not collapsed and at least 10 points above chance. "
                              "*s/epoch*: median wall time of an epoch, two runs at a time on a 2-core CPU shared with "
                              "other work (a rough guide only).")

    def _s_results(self) -> None:
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return


        doc.h(2, "4. Results")
        doc.h(3, "4.1 The paper's numbers against ours")
        rows, cells = [], []
        for r in d["groups"].itertuples():
            if getattr(r, "same_runs_as", "") == INTEGER:
                continue  # a loss whose encodings coincide, with one-hot targets: its integer-label runs
            spec = registry.get(r.loss)
            name = {"loss": spec.short, "targets": ENCODING_SHORT[r.encoding]}
            if spec.encodings_coincide and self.g(r.loss, ONEHOT, "seeds", 0):
                name["targets"] = f"{ENCODING_SHORT[INTEGER]} = {ENCODING_SHORT[ONEHOT]}"
            rows.append({**name, "2020 reported": fmt_pct(r.paper_reported),
                         "2020 metric, ours": fmt_pct(r.paper_metric_test_mean),
                         "true accuracy, all of TEST": fmt_ci(r.test, r.test_lo, r.test_hi),
                         "unseen cells": fmt_ci(r.unseen, r.unseen_lo, r.unseen_hi),
                         "sd over seeds": fmt_pct(r.unseen_sd),
                         "train acc.": fmt_pct(r.final_train_accuracy_mean),
                         "collapsed": f"{r.collapsed}/{r.finished}"})
            cells.append({**name, "unseen cells, one vote each": fmt_ci(r.unseen_cell, r.unseen_cell_lo, r.unseen_cell_hi),
                          "TEST_SIMPLE, per distinct slide": fmt_ci(getattr(r, "simple", np.nan),
                                                                    getattr(r, "simple_lo", np.nan),
                                                                    getattr(r, "simple_hi", np.nan))})
        n = max((self.seeds(l, e) for l, e in an.recipes(d["summary"])), default=0)
        once = [registry.get(l) for l in d["losses"] if registry.get(l).encodings_coincide]
        doc.table(pd.DataFrame(rows), f"Accuracy per loss and target encoding, pooled over seeds ({n} per setting), "
                  "with 95% intervals over seeds and cells. *2020 reported*: what the 2020 report stated; *2020 metric, "
                  "ours*: what its code would print for our runs (mean over seeds, all of TEST). *Unseen cells*: TEST "
                  "without the cells shared with TRAIN, the headline. *Sd over seeds*: the spread of single runs on "
                  "unseen cells. *Collapsed*: runs that collapsed out of those finished (section 4.8)."
                  + (f" {_and([o.words for o in once]).capitalize()} {'is one function' if len(once) == 1 else 'are each one function'} "
                     f"under both encodings, so {'it has' if len(once) == 1 else 'each has'} one row." if once else ""))
        doc.table(pd.DataFrame(cells), "The same runs counted per cell: each unseen TEST cell read as the majority "
                  "of its images (one vote per cell), and TEST_SIMPLE's un-augmented images, one per distinct slide "
                  "(all of its slides, the shared cells included); pooled over seeds, with 95% intervals over seeds "
                  "and cells.")
        doc.h(3, "4.2 Training curves")
        orig = d["orig"]
        for loss in d["losses"]:
            if d["summary"][(d["summary"].loss == loss) & (d["summary"].target_encoding == INTEGER)].empty:
                continue
            spec = registry.get(loss)
            log = pd.DataFrame(orig["logs"][loss]) if orig and loss in orig.get("logs", {}) else None
            as_2020 = f" as in 2020 (the paper's Figure {spec.figure_2020})" if spec.figure_2020 else ""
            doc.figure(study_figures.curves_figure(d["summary"], d["histories"], loss, log),
                       f"{spec.title}, integer labels{as_2020}, per epoch. Left: "
                       "the accuracy as the 2020 code printed it; middle: the true accuracy. Blue: training; red: "
                       "validation (TEST). Faint lines: single seeds; bold: their mean" +
                       ("; dashed: the 2020 run's own log over the same epochs (left) and over all its 100 "
                        "epochs (right)." if log is not None else "."))
        doc.figure(study_figures.comparison_figure(d["summary"], d["histories"]),
                   "True validation (TEST) accuracy per epoch for each loss and encoding: the line is the mean over "
                   "seeds, the shaded band the range from the lowest to the highest seed. With one-hot targets the "
                   "2020 metric equals the true accuracy, so a single panel per encoding says everything.")
        doc.h(3, "4.3 Confusion matrices")
        doc.figure(study_figures.confusion_figure(d["metrics"], d["summary"]),
                   "Confusion matrices on TEST's unseen cells, images summed over seeds. Each row is divided by the "
                   "number of images of its true class (rows sum to 1): the diagonal is each class's recall.")
        self._results_original()
        self._results_why25()
        self._results_pairs()
        self._results_per_class()
        self._results_collapse()

    def _results_original(self) -> None:
        d, doc = self.data, self.doc

        doc.h(3, "4.4 The 2020 models, re-scored")
        orig = d["orig"]
        if not orig or not orig.get("models"):
            doc.md("The 2020 weights were not found (set `WBC_ORIGINAL_DIR` to a copy of the original repository's "
                   "folder holding `checkpoints/` and `logfiles/`); the rest of the report stands without them.")
            return
        ot = an.original_table(orig)
        rows = [{"loss": registry.get(r.loss).title, "logged val. 'accuracy'": fmt_pct(r.logged_final_val_accuracy),
                 "2020 metric, recomputed": fmt_pct(r.recomputed_2020_metric),
                 "share of class 0": fmt_pct(r.argmax_class0_share),
                 "true accuracy, all of TEST": fmt_ci(r.true_accuracy, r.true_lo, r.true_hi),
                 "unseen cells": fmt_ci(r.unseen_accuracy, r.unseen_lo, r.unseen_hi),
                 "as a regression": "-" if not registry.get(r.loss).regresses_integer_labels else
                 fmt_ci(r.regression_accuracy, r.regression_lo, r.regression_hi)}
                for r in ot.itertuples() if not pd.isna(getattr(r, "true_accuracy", np.nan))]
        doc.table(pd.DataFrame(rows), f"The 2020 weights (240x320, raw pixels, epoch 100) loaded into this "
                  f"package's model and scored on {orig['split']}. *As a regression*: the mean of the four outputs "
                  "rounded to a class index, the reading integer-label MSE and Huber were trained for. Intervals "
                  "count the cells (one model each). " + (
                      "Collapsed by this report's definition: " + ", ".join(registry.get(r.loss).title for r in ot.itertuples()
                                                                            if r.collapsed is True) + "."
                      if (ot["collapsed"] == True).any() else  # noqa: E712
                      "None of them collapsed by this report's definition."))
        lines = []
        ce = self.orig_row("crossentropy")
        if ce and orig["split"] == "TEST":
            inside = ce["true_lo"] <= ce["logged_final_val_accuracy"] <= ce["true_hi"]
            lines.append(f"The cross-entropy model gives {ce['true_accuracy']:.4f} on all of TEST where its log says "
                         f"{ce['logged_final_val_accuracy']:.4f}"
                         + (": the 2020 number, reproduced from its own weights." if inside else
                            ", outside this interval: the weights do not reproduce the log.")
                         + f" On 0-1 pixels the same weights give {fmt_pct(ce['unit_inputs_accuracy'])}"
                         + (": the 2020 code fed raw pixels, whatever its text says." if
                            ce["unit_inputs_accuracy"] < ce["true_lo"] else "."))
        for spec in (s for s in losses_2020() if s.regresses_integer_labels):
            r = self.orig_row(spec.name)
            if r:
                lines.append(f"For {spec.words}, the logged 'accuracy' {r['logged_final_val_accuracy']:.4f} is the "
                             f"share of predictions whose argmax is class 0 (EOSINOPHIL), {r['recomputed_2020_metric']:.4f} "
                             f"recomputed from the weights; its four outputs differ within an image by a standard "
                             f"deviation of {r['score_spread_within_image']:.4f}, so that argmax is decided by noise.")
        doc.md(" ".join(lines))

    def _results_why25(self) -> None:
        d, doc = self.data, self.doc
        doc.h(3, "4.5 Why MSE and Huber showed 25%")
        lines = ["Two things went wrong together. The 2020 code passed the integer label (0-3) to every loss. Sparse "
                 "cross-entropy reads it as a class; MSE and Huber broadcast it against all four outputs, so each "
                 "output learns to predict the class *index*: the four outputs become equal and their argmax carries "
                 "no information. And its 'accuracy' for those losses was Keras's `categorical_accuracy` against a "
                 "one-column label, whose argmax is always 0: it counted predictions of class 0, about a quarter on "
                 "balanced data, whatever the model learned."]
        for spec in (registry.get(l) for l in d["losses"]):
            if not spec.regresses_integer_labels:
                continue
            p, o = self.acc(spec.name, INTEGER), self.acc(spec.name, ONEHOT)
            lines.append(f"Here, {spec.words} with integer labels reaches {p} true accuracy on unseen cells "
                         f"(its 2020 metric: {fmt_pct(self.g(spec.name, INTEGER, 'paper_metric_test_mean'))}); with "
                         f"one-hot targets {o}.")
        ee = d.get("encoding")
        if ee is not None and len(ee):
            lines.append("One-hot targets minus integer labels, paired on cells: " + "; ".join(
                f"{registry.get(r.loss).words} {fmt_diff(r._asdict())}, {r.words}" for r in ee.itertuples()) + ".")
        doc.md("\n\n".join(lines))

    def _results_pairs(self) -> None:
        d, doc = self.data, self.doc

        doc.h(3, "4.6 Does one loss beat another?")
        pt = d["paired"]
        if pt is None or pt.empty:
            doc.md("Fewer than two losses finished: nothing to compare.")
            return
        main, more = [], []
        for r in pt.to_dict("records"):
            unpaired = {k[len("unpaired_"):]: v for k, v in r.items() if k.startswith("unpaired_")}
            learned = {k[len("learned_"):]: v for k, v in r.items() if k.startswith("learned_")}
            name = {"targets": ENCODING_SHORT[r["encoding"]], "comparison": r["comparison"]}
            main.append({**name, "difference [95% CI]": fmt_diff(r), "verdict": r["words"],
                         "detectable": f"{100 * r['mde']:.1f} points"})
            more.append({**name, "unpaired [95% CI]": fmt_diff(unpaired) if r["paired"] else "(not paired)",
                         "collapsed": f"{r['collapsed_a']}/{r['n_a']} vs {r['collapsed_b']}/{r['n_b']}",
                         "Fisher": fmt_p(r["fisher_p"]),
                         "runs that did not collapse [95% CI] (seeds)":
                         f"{fmt_diff(learned)} ({r['learned_seeds']})"
                         if learned.get("diff") == learned.get("diff") else "-"})
        doc.table(pd.DataFrame(main), "Differences in seed-pooled accuracy on unseen TEST cells (percentage points), "
                  "first loss minus second, over every finished run: paired on the same cells and, where the two "
                  "losses were trained from the same seeds, on the seeds (section 3). The verdict says how many "
                  "seeds each side rests on. *Detectable*: the smallest true difference this design resolves with "
                  "80% power, (t(0.975) + t(0.8)) x its standard error.")
        doc.table(pd.DataFrame(more), "The same comparisons three more ways. *Unpaired*: each side's seeds counted as "
                  "independent runs (what pairing on seeds buys). *Collapsed*: runs that collapsed on each side, with "
                  "Fisher's exact test. *Runs that did not collapse*: the difference over the seeds where neither side "
                  "collapsed, paired when at least two such seeds remain; it selects on an outcome the loss itself "
                  "affects, so it describes, it does not compare like with like.")

    def _results_per_class(self) -> None:
        d, doc = self.data, self.doc


        rows = []
        for loss, enc in an.recipes(d["summary"]):
            st = an.stack(an.runs_for(d["summary"], loss, enc))
            row = {"setting": f"{registry.get(loss).short}, {ENCODING_SHORT[enc]}"}
            for r in an.per_class(st):
                row[f"{r['class'].lower()} ({r['cells']} cells)"] = fmt_ci(r["recall"], r["lo"], r["hi"])
            rows.append(row)
        if rows:
            doc.h(3, "4.7 Per class")
            mono = self.counts()["unseen_per_class_cells"]["MONOCYTE"]
            doc.table(pd.DataFrame(rows), "Recall per class on unseen TEST cells, pooled over seeds, with intervals "
                      "over seeds and cells; the number of independent cells behind each class is in its header. "
                      f"With {mono} monocyte cells, a class's recall is known only roughly.")

    def _results_collapse(self) -> None:
        d, doc = self.data, self.doc


        doc.h(3, "4.8 Collapse to a constant output")
        col = d.get("collapse")
        quick = d.get("collapse_quick")
        tabs = []
        if quick is not None and len(quick):
            tabs.append((f"this profile's cross-entropy runs (`{self.profile}`)", quick))
        separate = col is not None and self.profile != self.collapse_profile  # a collapse study of its own
        if separate and len(col["table"]):
            cs = col["settings"]
            size = "x".join(str(v) for v in cs.get("image_size", []))
            tabs.append((f"the collapse study (`{self.collapse_profile}`: {size}, {cs.get('train_subset', 0):,} images, "
                         f"{cs.get('epochs')} epochs)", col["table"]))
        for what, t in tabs:
            rows = [{"setting": r.setting, "collapsed": f"{r.collapsed}/{r.runs}",
                     "top-class share": fmt_pct(r.top_class_share), "output spread (median)": f"{r.output_spread:.3f}",
                     "vs 2020 recipe: Fisher, Holm": "reference" if r.is_2020 else
                     f"{fmt_p(r.fisher_p_vs_2020)}; {fmt_p(r.p_holm).replace('p ', 'adj. ')}", "seeds": r.seeds}
                    for r in t.itertuples()]
            doc.table(pd.DataFrame(rows), f"Runs that collapsed, per setting, in {what}. *Top-class share*: the share "
                      "of TEST predicted as the most frequent class (mean over runs). *Output spread*: the outputs' "
                      "spread across TEST images relative to the targets' (0: constant). *vs 2020 recipe*: two-sided "
                      "Fisher exact test of the collapse counts against cross-entropy, integer labels, lr 0.001, raw "
                      "pixels, and the same p adjusted by Holm's method for the settings compared.")
        if col is None and not d["has_losses"]:
            return
        src = col if col is not None else {"allruns": d["allruns"], "histories": d["histories"]}
        runs = src["allruns"]
        both = pd.concat([d["allruns"], runs], ignore_index=True) if separate and d["has_losses"] else runs
        doc.figure(study_figures.collapse_map_figure(both),
                   "The one collapse definition, applied to every run" + (" of both studies" if both is not runs else "")
                   + ": each run's final training loss relative to the best constant prediction's, against how much "
                   "its outputs vary across TEST images relative to the targets. A run is *collapsed* in the shaded "
                   "corner: no better than a constant on its own training data, and near-constant on TEST. Runs that "
                   "learn sit low and to the right; runs above 1 did worse than a constant (diverged).")
        ce = runs[(runs.loss == "crossentropy") & (runs.target_encoding == INTEGER) & (runs.status == "finished")]
        diags = {r.run_name: Run(r.run_dir).diagnostics() for r in ce.itertuples()}
        doc.figure(study_figures.collapse_figure(ce, src["histories"], diags),
                   "Cross-entropy runs with integer labels" + (" of the collapse study" if separate else "")
                   + ". Left: training loss per epoch, one colour per setting; a collapsed run sits on ln 4, the loss "
                   "of a constant output. Right: the share of each convolution's ReLU outputs that are 0 on a fixed "
                   "probe batch of 64 TRAIN images, at initialisation (dotted) and after one epoch (solid), averaged "
                   "over the runs that collapsed and the rest.")
        self._collapse_evidence(ce, diags)

    def _collapse_evidence(self, ce, diags: dict) -> None:
        doc = self.doc
        col = ce[ce.collapsed == True].run_name.tolist()  # noqa: E712
        ok = ce[ce.collapsed != True].run_name.tolist()  # noqa: E712

        def last(runs, when, key):
            out = []
            for r in runs:
                v = diags.get(r, {}).get(when, {}).get(key)
                if isinstance(v, dict) and v:
                    v = list(v.values())[-1]
                if v is not None:
                    out.append(float(v))
            return np.array(out)

        if len(col) < 2 or len(ok) < 2:
            doc.md(f"{len(col)} of {len(ce)} cross-entropy runs collapsed: too few on one side to compare their "
                   "diagnostics.")
            return
        lines, ps = [], []
        for key, words in (("dead_channels", "share of the last convolution's channels that are 0 on every probe image"),
                           ("grad_norm_total", "gradient norm")):
            a, b = last(col, "after_epoch_1", key), last(ok, "after_epoch_1", key)
            if len(a) >= 2 and len(b) >= 2:
                p = mannwhitneyu(a, b).pvalue
                ps.append(p)
                lines.append(f"{words} after one epoch: median {np.median(a):.3g} in the {len(a)} collapsed runs "
                             f"against {np.median(b):.3g} in the {len(b)} others (Mann-Whitney {fmt_p(p)})")
        if lines:
            both = all(p_ < 0.05 for p_ in ps)
            settings = ce[ce.collapsed == True].apply(  # noqa: E712
                lambda r: an.setting_name(r), axis=1).value_counts()
            mostly = (f" {int(settings.iloc[0])} of the {len(col)} collapsed runs share one setting "
                      f"({settings.index[0]}), so this describes those runs as much as collapse itself."
                      if len(settings) and settings.iloc[0] > len(col) / 2 else "")
            doc.md("Diagnostics behind it: " + "; ".join(lines) + ". " + (
                "Both differ: the runs that collapsed had more dead ReLUs and a smaller gradient after the first "
                "epoch." + mostly if both else
                "Not both differences are resolved (p >= 0.05), so no mechanism is claimed from them."))

    def _s_discussion(self) -> None:
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return
        doc.h(2, "5. Discussion")
        lines = []
        mse, hub = self.orig_row("mse"), self.orig_row("huber")
        if mse and hub:
            lines.append(f"The 2020 report read its MSE and Huber curves as models that failed to learn. Its own weights "
                         f"say otherwise: the logged 'accuracy' of MSE and Huber is the share of predictions of class 0, "
                         f"while read as the regressions they were trained to be, they score "
                         f"{fmt_ci(mse['regression_accuracy'], mse['regression_lo'], mse['regression_hi'])} and "
                         f"{fmt_ci(hub['regression_accuracy'], hub['regression_lo'], hub['regression_hi'])}.")
        n = self.seeds("crossentropy", INTEGER)
        sd = self.g("crossentropy", INTEGER, "unseen_sd")
        oh = [self.g(l, ONEHOT, "unseen") for l in d["losses"]]
        oh = [v for v in oh if v == v]
        if len(oh) > 1:
            lines.append(f"At this profile's size, with one-hot targets, the {_number(len(oh))} losses' pooled "
                         f"accuracies lie within "
                         f"{100 * (max(oh) - min(oh)):.1f} points of each other, and section 4.6 says which differences "
                         f"{n} seeds and {self.counts()['unseen_cells']} cells can resolve.")
        pt = d.get("paired")
        diffs = np.abs(pt["diff"].to_numpy(float)) if pt is not None and len(pt) else np.array([])
        if n > 1 and sd == sd:
            bigger = int((diffs < sd).sum())
            lines.append(f"Across seeds, cross-entropy's accuracy varies with a standard deviation of {100 * sd:.1f} "
                         f"points" + (f", more than {bigger} of the {len(diffs)} differences between losses in section 4.6"
                                      if len(diffs) else "") + ".")
        lines.append("The 2020 report's 'about 70%' came from one run of one seed: it carried the seed-to-seed "
                     "uncertainty, and that of a test set of a few dozen cells, unstated.")
        txt = self._collapse_sentence(short=True)
        lines.append((txt + " " if txt else "") + "A single run per loss, as in 2020, cannot tell a loss from a lucky "
                     "or unlucky start (section 4.8).")
        doc.md("\n\n".join(lines))

    def _s_conclusion(self) -> None:
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return
        doc.h(2, "6. Conclusion")
        claimed = registry.get("crossentropy").reported_2020
        weights_ok, trained_ok = self._reproduced()
        w = {True: "is reproduced from its own weights", False: "is not reproduced even from its own weights",
             None: "could not be checked against its weights (not found)"}[weights_ok]
        lower = self.g("crossentropy", INTEGER, "test") < claimed
        t = (f"lies inside the interval of training at this profile's size{', whose mean is lower' if lower else ''}"
             if trained_ok else "is not reached by training at this profile's size")
        doc.md(f"""
        The 2020 study's ranking of losses rests on a metric that, for two of its three losses, counted predictions of
        one class, and on targets that made MSE and Huber regress onto a class index. Corrected, the three losses are
        all classification losses, and the differences between them must be read against intervals over cells and
        seeds, which this dataset makes wide. Its cross-entropy accuracy ({fmt_pct(claimed)}) {w}, and {t}. Profile
        `{self.profile}` trades: {d['settings'].get('trades', 'n/a')}. The faithful full-size set-up is
        `make report PROFILE=paper`.
        """)

    def _s_beyond(self) -> None:
        d, doc = self.data, self.doc
        best = d["best"]
        doc.h(2, "7. Beyond the paper: a from-scratch model, chosen without touching TEST")
        if not d["has_best"]:
            doc.md(f"No finished runs of the `{self.best_profile}` profile: `make report PROFILE={self.best_profile}` "
                   "trains them (about an hour on a 2-core CPU) and this section then shows a from-scratch model "
                   "chosen on held-out TRAIN cells.")
            return
        doc.md("The 2020 report concluded that its architecture was ill-suited to the task. This section shows how "
               "much better a small network of today's design does, trained from scratch on the same images.\n\n"
               + beyond.methods_markdown(best))
        doc.h(3, "7.1 Lab notebook: every candidate, scored on held-out TRAIN cells, fold by fold")
        k = int(best["lab"]["folds"].iloc[0]) if len(best["lab"]) else 0
        doc.table(beyond.lab_frame(best), f"Each candidate design trained (seed 0) once per fold: on {k - 1} of {k} "
                  "folds of TRAIN's same-cell clusters, scored on the remaining one (the same folds for every "
                  "candidate). Sorted by mean validation accuracy; *tied* where the fold ranges overlap the pick's. "
                  "Negative results stay in.")
        doc.figure(final_figures.lab_curves_figure(best["summary"], best["study"].histories),
                   "The lab's learning curves: each candidate's mean over its folds, the folds' range shaded.")
        lines = [f"- {x}" for x in best["decisions"]]
        if best["tta"]:
            t = best["tta"]
            lines.append(f"- Test-time augmentation raised validation accuracy for {t['raised']} of {t['candidates']} "
                         "candidates: " + "; ".join(f"{k}: {100 * g:+.1f} points" for k, g in t["gains"].items())
                         + f". {'It is used in the final runs.' if best['chosen'].get('tta') else 'The final runs do not use it.'}")
        doc.md("\n".join(lines))
        doc.h(3, "7.2 The final model on TEST")
        doc.table(beyond.final_frame(best), "The kept design trained on all of TRAIN, once per seed; TEST scored once. "
                  "Per-seed and ensemble intervals count the cells (each is one classifier); the seed-pooled row "
                  "counts the seeds and the cells. "
                  "*Cells, by vote*: unseen TEST cells, one vote each. *TEST_SIMPLE slides*: one image per distinct "
                  "slide. Calibration is in section 7.4; training took "
                  f"{best['seeds']['train_minutes'].mean():.1f} minutes per model on average.")
        doc.md(beyond.verdict_markdown(best))
        doc.h(3, "7.3 Confusion matrices, and the cells it still gets wrong")
        cms = best["confusions"]
        doc.figure(final_figures.confusion_pair_figure(cms["image"], cms["cell"], len(best["final_runs"])),
                   "The final models on TEST's unseen cells, summed over seeds. Colour: the share of the row (each "
                   "true class's row sums to 1); number: the count. Left: images; right: cells, one vote each.")
        w = best["wrong_cells"]
        if len(w):
            doc.md("Cells misread by at least one seed (by the vote of the cell's TEST images, or on its TEST_SIMPLE "
                   f"slide; out of {int(w.seeds.iloc[0])} seeds):\n\n" + "\n".join(
                       f"- cell {r['cell']} ({r['class'].lower()}) read as {r['voted'].lower()}: "
                       f"{r['seeds_wrong_majority']} by vote, {r['seeds_wrong_simple']} on TEST_SIMPLE"
                       + (" (also in TRAIN)" if r["shared"] else "") for r in w.to_dict("records")))
            doc.figure(final_figures.wrong_cells_figure(w, d["manifest"], tuple(best["chosen"]["image_size"]),
                                             best["chosen"].get("view", "full")),
                       "Each misread cell's un-augmented TEST_SIMPLE image and the input the model saw.")
        doc.h(3, "7.4 Calibration, and abstaining on the least confident cells")
        doc.figure(final_figures.reliability_figure(best["pooled_probs"], best["pooled_labels"], best["pooled_cells"]),
                   f"Reliability on TEST's unseen images ([Guo et al., 2017]({LINKS['guo2017']})): confidence "
                   "against accuracy in 10 equal-width bins, one line per seed, with each seed's ECE and its "
                   "interval over cells; below, how many images (all seeds) fall in each bin.", width=62)
        doc.figure(final_figures.risk_coverage_figure(best["risk_coverage"]),
                   "Risk-coverage: accuracy on the cells kept when the least confident are set aside first (the same "
                   "vote as the cell accuracy; confidence = the mean probability of the voted class). Dashed: what "
                   "setting cells aside at random keeps.", width=62)
        doc.md(beyond.calibration_markdown(best))
        doc.h(3, "7.5 What it looks at")

        r0 = best["final_runs"].iloc[0]
        brun = load_model(r0.run_dir)
        ex = examples_per_class(Run(r0.run_dir).predictions())
        doc.figure(model_figures.gradcam_figure(brun, ex, model_figures.images_for(ex, run_split(brun, "TEST")), per_row=3),
                   "Grad-CAM of the first seed's model for one right and one wrong TEST image per class (where "
                   "there is one): red marks where the evidence for the predicted class lies.")

    def _s_changes(self) -> None:
        """What this version changes in what the package shipped before (the full history: CHANGES.md)."""
        d, doc = self.data, self.doc
        if not d["has_losses"]:
            return
        doc.h(2, "What changed since the previous reference report")
        items = []
        if self.profile == REFERENCE_PROFILE:
            items.append(f"- **The reference is now the `{self.profile}` profile.** The previous reference report was "
                         "the `quick` profile's, at a size where the network had not learned (3,000 images: its "
                         "comparisons between losses could not be resolved). The `quick` profile is now this profile "
                         "on its first two seeds, so it learns too (`report/shipped/quick/`).")
        items += [
            "- **Comparisons paired on seeds.** A seed fixes the initial weights, the training images and the batch "
            "order, so two settings trained from the same seed are compared seed by seed (section 3); the previous "
            "report counted each setting's seeds as independent runs. Section 4.6 shows both intervals side by "
            "side.",
            "- **Verdicts that bound.** Beside resolved / not resolved, a comparison whose interval lies inside a "
            "margin fixed in advance (2, 5 or 10 points) says there is no difference larger than that, and every "
            "comparison states the smallest difference its design detects with 80% power.",
            "- **Figures 1-3 per epoch.** They stretched this study's few epochs over the 2020 run's 100 (\"% of "
            "epochs\"), comparing unlike points; the x axis is now the epoch, the 2020 log beside it.",
        ]
        doc.md("\n".join(items) + "\n\nThe full history of changes is in `CHANGES.md`.")

    def _s_appendix(self) -> None:
        d, doc = self.data, self.doc

        if d["has_losses"]:
            doc.h(2, "Appendix A: every run")
            ar = d["allruns"]
            app = pd.DataFrame({
                "run": ar.run_name, "role": ar.role, "status": ar.status,
                "unseen TEST [95% CI]": [fmt_ci(r.unseen_accuracy, r.unseen_accuracy_lo, r.unseen_accuracy_hi)
                                         for r in ar.itertuples()],
                "2020 metric": [fmt_pct(v) for v in ar.paper_metric_test],
                "train acc.": [fmt_pct(v) for v in ar.final_train_accuracy],
                "collapsed": ar.collapsed.map({True: "yes", False: "no"}).fillna("-"),
                "top class": [fmt_pct(v) for v in ar.top_class_share]})
            doc.table(app, "Every run of the study, finished or not. Intervals count the cells (one model each).",
                      cls="small", keep=False)
            errs = ar[ar.error.fillna("") != ""]
            if len(errs):
                doc.md("**Failed runs**:\n\n" + "\n".join(f"- `{r.run_name}`: {r.error}" for r in errs.itertuples()))
        man = d["manifest"]
        if man.skipped:
            doc.h(2, f"Appendix B: {len(man.skipped)} skipped file(s)")
            doc.md("\n".join(f"- `{s.path}`: {s.reason}" for s in man.skipped[:50]))


# ----------------------------------------------------------------------------- headline numbers


def pilot_of(name: str | None, runs_root=None) -> dict | None:
    """The pilot study that chose a profile's scale: its table, the paired CE - MSE spread (where both were tried:
    the same size, rate and seeds), and what the rule chooses from them (None when the profile names no pilot, or
    it has not run)."""
    if not name or study_record(name, runs_root) is None:
        return None
    pilot = load_study(name, runs_root)
    summary, histories = pilot.runs, pilot.histories  # the candidates are the pilot's runs, main and control
    table = an.pilot_table(summary, histories)
    if table.empty or not (table["loss"] == "crossentropy").any():
        return None
    # the spread of paired loss differences, where both losses were tried: cross-entropy at MSE's size and rate
    mse = table[(table["loss"] == "mse") & (table["encoding"] == ONEHOT)]
    ce = table[table["loss"] == "crossentropy"]
    if len(mse):
        ce = ce[(ce["image_size"] == mse["image_size"].iloc[0]) & (ce["learning_rate"] == mse["learning_rate"].iloc[0])]
    spread = an.paired_spread(summary, ce["candidate"].iloc[0], mse["candidate"].iloc[0]) \
        if len(ce) and len(mse) else None
    return {"name": name, "table": table, "spread": spread, "choice": an.choose_design(table, spread)}


def _seed_span(seeds) -> str:
    """'0-9' for a run of consecutive seeds, else '0, 2, 5'."""
    v = sorted({int(x) for x in seeds})
    if not v:
        return "none"
    return f"{v[0]}-{v[-1]}" if len(v) > 2 and v == list(range(v[0], v[-1] + 1)) else ", ".join(map(str, v))


def findings(profile: str, runs_root=None) -> dict:
    """The study's headline numbers (what the README quotes), from the same tables as the report."""
    rep = Report(profile=profile, runs_root=runs_root)
    rep._load("")
    d = rep.data
    out: dict = {"profile": rep.profile, "generated": datetime.date.today().isoformat(), "counts": rep.counts()}
    if d["has_losses"]:
        s = d["settings"]
        out["settings"] = {k: s.get(k) for k in ("image_size", "epochs", "train_subset", "learning_rate", "seeds")}
        plan = d["study"].plan
        out["settings"]["seeds_planned"] = list(plan.seeds) if plan is not None else s.get("seeds")
        out["recipes"] = []
        for r in d["groups"].itertuples():
            out["recipes"].append({k: (v.item() if hasattr(v, "item") else v) for k, v in r._asdict().items()
                                   if k in ("loss", "encoding", "same_runs_as", "seeds", "finished", "collapsed",
                                            "unseen", "unseen_lo", "unseen_hi", "test", "test_lo", "test_hi",
                                            "paper_metric_test_mean", "final_train_accuracy_mean", "unseen_sd")})
        out["comparisons"] = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()
                               if k in ("encoding", "comparison", "diff", "lo", "hi", "resolved", "words", "paired",
                                        "equivalence", "mde", "n_seeds_a", "n_seeds_b", "unpaired_lo", "unpaired_hi",
                                        "collapsed_a", "n_a", "collapsed_b", "n_b", "fisher_p", "learned_diff",
                                        "learned_lo", "learned_hi", "learned_words")}
                              for r in d["paired"].to_dict("records")]
        out["original"] = {s.name: rep.orig_row(s.name) for s in losses_2020() if rep.orig_row(s.name)}
        out["original_split"] = (d.get("orig") or {}).get("split")
        ct = (d.get("collapse") or {}).get("table")
        if ct is not None and len(ct):
            out["collapse"] = ct.to_dict("records")
        cq = d.get("collapse_quick")
        if cq is not None and len(cq) > 1 and cq["is_2020"].any():  # the profile's own 2020-rate control
            out["collapse_here"] = cq.to_dict("records")
        if d.get("pilot"):
            out["pilot"] = {"name": d["pilot"]["name"], "choice": d["pilot"]["choice"],
                            "candidates": d["pilot"]["table"][["candidate", "val_mean", "learned", "runs",
                                                               "plateau_epoch"]].to_dict("records")}
    if d["has_best"]:
        out["best"] = d["best_findings"]
    return _jsonable(out)


def best_findings(best: dict) -> dict:
    """The best profile's headline numbers (results.json and the README), from section 7's tables."""
    p, e, sd = best["pooled"], best["ensemble"], best["seeds"]
    lab = best["lab"]
    return {"seeds": p["seeds"], "unseen": p["unseen"], "unseen_lo": p["unseen_lo"],
            "unseen_hi": p["unseen_hi"], "test": p["test"], "test_lo": p["test_lo"], "test_hi": p["test_hi"],
            "cell": p["unseen_cell"], "cell_lo": p["unseen_cell_lo"], "cell_hi": p["unseen_cell_hi"],
            "simple": p.get("simple"), "simple_lo": p.get("simple_lo"), "simple_hi": p.get("simple_hi"),
            "ensemble": e["ensemble"], "ensemble_ci": e["ensemble_ci"],
            "per_seed_unseen": sd["unseen_accuracy"].tolist(),
            "per_seed_simple": sd["simple_accuracy"].tolist() if "simple_accuracy" in sd else [],
            "mean_unseen": float(sd["unseen_accuracy"].mean()),
            "mean_simple": float(sd["simple_accuracy"].mean()) if "simple_accuracy" in sd else None,
            "train_minutes": float(sd["train_minutes"].mean()),
            "folds": int(lab["folds"].iloc[0]) if len(lab) else 0,
            "lab": [{"design": r.design, "mean": r.val_accuracy, "sd": r.val_sd, "folds": r.fold_accuracies,
                     "tied": bool(r.tied)} for r in lab.itertuples()] if len(lab) else []}


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    return o
