"""The report: its sections in order, each one template over the report's facts.

``report/report.ipynb`` stays thin: it loads a :class:`Report` and shows its sections one per cell. The
numbers are facts (:mod:`wbc_utils.facts`, computed once from a study's artifacts); the prose is in
``wbc_utils/templates/report/<section>.md.j2``; tables come from :mod:`wbc_utils.tables`, figures from
:mod:`wbc_utils.figures.registry`; :class:`wbc_utils.document.Document` numbers sections, figures, tables and
references from their labels. Adding a section is one template and one line in :data:`SECTIONS`.

:meth:`Report.write_results` writes the facts it rendered to ``report/<profile>/results.json``; the README's
"what the study finds" block is generated from that file.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from IPython.display import HTML, display

from . import beyond, registry, verdicts
from .analysis import fmt_diff, fmt_p, fmt_pct
from .artifacts import write_json
from .config import TEMPLATES
from .document import STYLE, Document, Reference
from .errors import WBCError
from .evaluation import COLLAPSE_LOSS_TOL, COLLAPSE_SPREAD_MAX
from .facts import ReportFacts, to_json
from .figures.registry import FIGURES
from .gather import build_facts, pilot_of  # noqa: F401  (pilot_of: the tests read it from here)
from .tables import TABLES

#: The report's sections, in order: (name shown by ``Report.show``, template under templates/report/).
SECTIONS: list[tuple[str, str]] = [
    ("title", "title.md.j2"),
    ("abstract", "abstract.md.j2"),
    ("intro", "introduction.md.j2"),
    ("data", "data.md.j2"),
    ("methods", "methods.md.j2"),
    ("results", "results.md.j2"),
    ("collapse", "collapse.md.j2"),
    ("discussion", "discussion.md.j2"),
    ("limitations", "limitations.md.j2"),
    ("beyond", "beyond.md.j2"),
    ("references", "references.md.j2"),
    ("appendix", "appendix.md.j2"),
]

#: The reference list: every source the report cites (numbered in order of first citation).
REFERENCES: dict[str, Reference] = {r.key: r for r in [
    Reference("sarkar2020", "Sarkar, Tapp-Hughes and Zhang Solis (2020). *Using Neural Networks to Classify White "
              "Blood Cell Images*. Course report, COMP 562, University of North Carolina at Chapel Hill; code and "
              "trained models:", "https://github.com/tapphughesn/COMP562FinalProject"),
    Reference("mooney2018", "Mooney, P. (2018). *Blood Cell Images* (Kaggle dataset; augmented from the BCCD "
              "dataset; MIT licence).", "https://www.kaggle.com/datasets/paultimothymooney/blood-cells"),
    Reference("bccd", "Shenggan (2017). *BCCD Dataset*: blood cell detection images and annotations (MIT licence).",
              "https://github.com/Shenggan/BCCD_Dataset"),
    Reference("dhruvp", "Dhruv P. *wbc-classification*: the augmentation code the Kaggle dataset was built with.",
              "https://github.com/dhruvp/wbc-classification"),
    Reference("ronneberger2015", "Ronneberger, O., Fischer, P. and Brox, T. (2015). U-Net: convolutional networks "
              "for biomedical image segmentation. *MICCAI 2015*, LNCS 9351, 234-241.",
              "https://doi.org/10.1007/978-3-319-24574-4_28"),
    Reference("kingma2015", "Kingma, D. P. and Ba, J. (2015). Adam: a method for stochastic optimization. *ICLR 2015*.",
              "https://arxiv.org/abs/1412.6980"),
    Reference("huber1964", "Huber, P. J. (1964). Robust estimation of a location parameter. *Annals of Mathematical "
              "Statistics* 35(1), 73-101.", "https://doi.org/10.1214/aoms/1177703732"),
    Reference("lowe2004", "Lowe, D. G. (2004). Distinctive image features from scale-invariant keypoints. "
              "*International Journal of Computer Vision* 60(2), 91-110.",
              "https://doi.org/10.1023/B:VISI.0000029664.99615.94"),
    Reference("satterthwaite1946", "Satterthwaite, F. E. (1946). An approximate distribution of estimates of "
              "variance components. *Biometrics Bulletin* 2(6), 110-114.", "https://doi.org/10.2307/3002019"),
    Reference("cochran1977", "Cochran, W. G. (1977). *Sampling Techniques*, 3rd ed. Wiley (stratified cluster "
              "sampling, chapters 5 and 9)."),
    Reference("schuirmann1987", "Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the "
              "power approach for assessing the equivalence of average bioavailability. *Journal of "
              "Pharmacokinetics and Biopharmaceutics* 15(6), 657-680.", "https://doi.org/10.1007/BF01068419"),
    Reference("fisher1935", "Fisher, R. A. (1935). *The Design of Experiments*. Oliver and Boyd (the exact test of "
              "a 2x2 table)."),
    Reference("mcnemar1947", "McNemar, Q. (1947). Note on the sampling error of the difference between correlated "
              "proportions or percentages. *Psychometrika* 12(2), 153-157.", "https://doi.org/10.1007/BF02295996"),
    Reference("holm1979", "Holm, S. (1979). A simple sequentially rejective multiple test procedure. "
              "*Scandinavian Journal of Statistics* 6(2), 65-70."),
    Reference("jeffreys1946", "Jeffreys, H. (1946). An invariant form for the prior probability in estimation "
              "problems. *Proceedings of the Royal Society A* 186, 453-461.",
              "https://doi.org/10.1098/rspa.1946.0056"),
    Reference("mannwhitney1947", "Mann, H. B. and Whitney, D. R. (1947). On a test of whether one of two random "
              "variables is stochastically larger than the other. *Annals of Mathematical Statistics* 18(1), 50-60.",
              "https://doi.org/10.1214/aoms/1177730491"),
    Reference("guo2017", "Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. (2017). On calibration of modern "
              "neural networks. *ICML 2017*, PMLR 70, 1321-1330.", "https://proceedings.mlr.press/v70/guo17a.html"),
    Reference("selvaraju2017", "Selvaraju, R. R. et al. (2017). Grad-CAM: visual explanations from deep networks "
              "via gradient-based localization. *ICCV 2017*, 618-626.", "https://arxiv.org/abs/1610.02391"),
    Reference("akiba2019", "Akiba, T., Sano, S., Yanase, T., Ohta, T. and Koyama, M. (2019). Optuna: a next-generation "
              "hyperparameter optimization framework. *KDD 2019*, 2623-2631.", "https://doi.org/10.1145/3292500.3330701"),
    Reference("nadeau2003", "Nadeau, C. and Bengio, Y. (2003). Inference for the generalization error. *Machine "
              "Learning* 52, 239-281.", "https://doi.org/10.1023/A:1024068626366"),
    Reference("tellez2019", "Tellez, D. et al. (2019). Quantifying the effects of data augmentation and stain color "
              "normalization in convolutional neural networks for computational pathology. *Medical Image Analysis* "
              "58, 101544.", "https://doi.org/10.1016/j.media.2019.101544"),
    Reference("keras_metric", "TensorFlow 2.1 source, `tensorflow/python/keras/engine/training_utils.py`: how "
              "`metrics=['accuracy']` is resolved per loss.",
              "https://github.com/tensorflow/tensorflow/blob/v2.1.0/tensorflow/python/keras/engine/training_utils.py"),
]}

TEMPLATE_DIR = TEMPLATES / "report"


@dataclasses.dataclass
class Report:
    """Everything the report shows: its facts, rendered section by section into one numbered document."""

    facts: ReportFacts
    doc: Document

    @classmethod
    def load(cls, profile: str, runs_root=None, best_profile: str = "best", collapse_profile: str = "collapse",
             loss_profile: str = "") -> Report:
        """Read a study's artifacts and render every section."""
        return cls.render(build_facts(profile, runs_root or None, best_profile, collapse_profile, loss_profile))

    @classmethod
    def render(cls, facts: ReportFacts, draw: bool = True) -> Report:
        """Render every section of :data:`SECTIONS` from ``facts`` (``draw=False``: figures as placeholders)."""
        doc = Document(TEMPLATE_DIR, FIGURES, TABLES, REFERENCES, draw=draw)
        doc.env.filters.update(pct=fmt_pct, pval=fmt_p, comma=lambda n: f"{int(n):,}", join_and=_and,
                               capfirst=lambda t: t[:1].upper() + t[1:])
        helpers: dict[str, Any] = {
            "registry": registry, "INTEGER": registry.INTEGER, "ONEHOT": registry.ONEHOT, "v": verdicts,
            "seed_span": verdicts.seed_span, "points": fmt_diff,
            "collapse_tol": f"{COLLAPSE_LOSS_TOL:.0%}", "collapse_spread": f"{COLLAPSE_SPREAD_MAX:.0%}",
            "beyond_md": SimpleNamespace(methods=beyond.methods_markdown, verdict=beyond.verdict_markdown,
                                         calibration=beyond.calibration_markdown, flag=beyond.flag_markdown)}
        for name, template in SECTIONS:
            doc.render(name, template, facts, **helpers)
        doc.finish()
        if doc.unresolved():
            raise WBCError(f"the report refers to {', '.join(doc.unresolved())}, which no section defines: a "
                           "template refers to a figure or table it does not draw in every case; guard the "
                           "reference with the same condition")
        return cls(facts, doc)

    def show(self, name: str) -> None:
        """Display one section (in a notebook; exported HTML and PDF keep it)."""
        body = self.doc.html_sections[name]
        if name == SECTIONS[0][0]:
            body = STYLE + body
        if body.strip() != '<div class="wbc"></div>':
            display(HTML(body))

    def html(self) -> str:
        return self.doc.html()

    def write_results(self, path) -> Path:
        """Write the facts this report rendered as JSON (``results.json``; the README block reads it)."""
        return write_json(Path(path), to_json(self.facts))


def _and(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
