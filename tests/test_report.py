"""The report's building blocks and the README's generated findings block."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from wbc_utils.config import SHIPPED_RESULTS  # noqa: E402
from wbc_utils.document import inline  # noqa: E402
from wbc_utils.report import BLOCK_END, BLOCK_START, readme_block, update_readme  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_readme_findings_match_the_shipped_report():
    """The README quotes the shipped report's numbers, generated from its results.json, never typed by hand."""
    assert SHIPPED_RESULTS.exists(), "report/shipped/quick/results.json is shipped with the report"
    assert update_readme(SHIPPED_RESULTS, ROOT / "README.md", check=True), \
        "README's findings block is out of date: run `make readme` (and commit report/shipped/quick/results.json " \
        "with it)"


def _results():
    return {"profile": "quick", "counts": {"unseen_cells": 62},
            "settings": {"image_size": [60, 80], "epochs": 6, "seeds": [0, 1, 2, 3, 4]},
            "recipes": [{"loss": "mse", "encoding": "onehot", "same_runs_as": "", "seeds": 5, "finished": 5,
                         "collapsed": 1, "unseen": 0.395, "unseen_lo": 0.274, "unseen_hi": 0.532, "test": 0.388,
                         "test_lo": 0.267, "test_hi": 0.529, "paper_metric_test_mean": 0.388}],
            "comparisons": [{"encoding": "onehot", "comparison": "CE - MSE", "diff": -0.004, "lo": -0.164,
                             "hi": 0.155, "resolved": False, "words": "not resolved (5 seeds each)"}]}


def test_readme_block_is_written_from_the_numbers(tmp_path):
    block = readme_block(_results())
    assert block.startswith(BLOCK_START) and block.endswith(BLOCK_END)
    assert "| MSE | one-hot | - | 38.8% | 39.5% [27.4, 53.2] | 38.8% [26.7, 52.9] | 1/5 |" in block
    assert "CE - MSE: -0.4 points [-16.4, +15.5], not resolved (5 seeds each)" in block
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BLOCK_START} -->\nold\n{BLOCK_END}\noutro\n")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    assert not update_readme(results, readme, check=True)
    assert not update_readme(results, readme)  # rewrites
    assert update_readme(results, readme, check=True)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    changed = _results()
    changed["recipes"][0]["unseen"] = 0.5
    results.write_text(json.dumps(changed))
    assert not update_readme(results, readme, check=True)


def test_readme_without_markers_is_a_clear_error(tmp_path):
    from wbc_utils.errors import WBCError

    readme = tmp_path / "README.md"
    readme.write_text("no block here\n")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    with pytest.raises(WBCError, match="findings block"):
        update_readme(results, readme)


def _document(tmp_path, templates: dict[str, str], figures=None, tables=None):
    from wbc_utils.document import Document, Reference

    for name, text in templates.items():
        (tmp_path / name).write_text(text)
    refs = {"a": Reference("a", "Author (2000). *A title*.", "https://example.org/a"),
            "b": Reference("b", "Other (2001). *Another*.")}
    return Document(tmp_path, figures or {}, tables or {}, refs)


def test_document_numbers_from_labels_and_resolves_forward_references(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    tables = {"t": lambda f: pd.DataFrame({"x": ["-", "1.0% [0.5, 2.0]"]}), "empty": lambda f: pd.DataFrame()}
    figures = {"pic": lambda f, **kw: plt.subplots()[0], "none": lambda f: None}
    one = ('{{ section("First", "first") }}\n\nSee {{ ref("tab:t") }} and {{ ref("sec:second") }} {{ cite("b") }}.\n\n'
           '{% call table("tab:t", "t") %}a table{% endcall %}\n\n'
           '{% call table("tab:e", "empty") %}x{% endcall %}\n'
           '{% call figure("fig:none", "none") %}not drawn{% endcall %}\n')
    two = ('{{ section("Second", "second") }}\n{{ subsection("Sub", "sub") }}\n\n'
           '{% call figure("fig:p", "pic") %}a picture, {{ f }}{% endcall %}\n\n'
           '{{ ref("fig:nowhere") }} {{ cite("a", "b") }}\n\n{{ references() }}\n')
    doc = _document(tmp_path, {"one.md.j2": one, "two.md.j2": two}, figures, tables)
    doc.render("one", "one.md.j2", "facts")
    doc.render("two", "two.md.j2", "facts")
    doc.finish()
    one, two = doc.html_sections["one"], doc.html_sections["two"]
    assert "See Table 1 and section 2 [1]." in one  # a reference forwards, a citation numbered when first cited
    assert '<div class="keep"><h2>1. First</h2><p>' in one  # the heading kept with its first paragraph
    assert "<strong>Table 1.</strong> a table" in one and "Table 2" not in one  # an empty table takes no number
    assert "<td>-</td>" in one and "<li>-" not in one  # a dash is not a list
    assert "<td class=num>1.0% [0.5, 2.0]</td>" in one
    assert "not drawn" not in one and "fig:none" not in doc.labels  # a figure that draws nothing takes no number
    assert "<h3>2.1 Sub</h3>" in two and "<strong>Figure 1.</strong> a picture, facts" in two
    assert "data:image/png;base64," in two
    assert "[2, 1]" in two and two.index("Author (2000)") > two.index("<ol")  # numbered in order of first citation
    assert "?? " in two and doc.unresolved() == ["fig:nowhere"]


def test_document_refuses_a_label_defined_twice_and_an_unknown_reference(tmp_path):
    import jinja2

    doc = _document(tmp_path, {"a.md.j2": '{{ section("A", "x") }}{{ section("B", "x") }}',
                               "b.md.j2": '{{ cite("nobody") }}', "c.md.j2": "{{ f.missing }}"})
    with pytest.raises(ValueError, match="defined twice"):
        doc.render("a", "a.md.j2", None)
    with pytest.raises(KeyError, match="nobody"):
        doc.render("b", "b.md.j2", None)
    with pytest.raises(jinja2.UndefinedError):  # a fact a template names must exist
        doc.render("c", "c.md.j2", {})


def test_table_cells_keep_bold_and_code():
    assert inline("**Reproduced** by `x`") == "<strong>Reproduced</strong> by <code>x</code>"


def test_report_renders_from_synthetic_facts_with_every_section_and_no_dangling_reference():
    """The whole report from a small hand-made facts object (no artifacts, figures as placeholders): every
    section renders, every reference resolves, and the prose follows the facts (a verdict changes with them)."""
    from synthetic_facts import synthetic_facts

    from wbc_utils.sections import SECTIONS, Report

    rep = Report.render(synthetic_facts(), draw=False)
    assert rep.doc.unresolved() == []
    html = rep.html()
    assert list(rep.doc.html_sections) == [name for name, _ in SECTIONS]
    for heading in ("Abstract", "1. Introduction and the questions", "2. Data", "3. Methods", "4. Results",
                    "5. Discussion", "6. Limitations", "References", "Appendix A: every run"):
        assert f"<h2>{heading}</h2>" in html, heading
    assert "Its cross-entropy figure stands" in html and "Holds only in part" in html
    assert "TRAIN's per-class counts add to 260, not 259" in html
    assert "Sarkar, Tapp-Hughes and Zhang Solis (2020)" in html and "??" not in html
    assert "Traceback" not in html and "{{" not in html and "@@" not in html
    # the verdicts are read from the facts, not written in the template
    facts = synthetic_facts(weights_log=0.95)
    assert "Its cross-entropy figure does not stand" in Report.render(facts, draw=False).html()


def _text(html: str) -> str:
    """The rendered report as plain text: tags, URLs and code spans removed."""
    import re

    html = re.sub(r"<code>.*?</code>|https?://\S+", " ", html)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.mark.parametrize("variant", ["plain", "no_weights", "every_branch", "no_loss_study", "no_comparisons"])
def test_report_variants_render_without_joined_sentences(variant):
    """The branches a real study may or may not take (no 2020 weights; a decision after the pilot with its later
    seeds, encoding effects, collapse diagnostics) all render, resolve every reference, and never join two
    sentences (a template's block tag eating the space or line between them)."""
    import re

    from synthetic_facts import synthetic_facts

    from wbc_utils.facts import CollapseDiagnostics, DiagnosticTest
    from wbc_utils.sections import Report

    facts = synthetic_facts()
    if variant == "no_weights":
        facts.original = {}
    if variant == "no_comparisons":  # one loss finished: nothing to compare
        facts.comparisons = []
    if variant == "no_loss_study":  # a lab's report with no loss study beside it
        facts.settings, facts.recipes, facts.comparisons, facts.losses, facts.original = None, [], [], [], {}
        facts.collapse_here, facts.per_class, facts.per_seed = [], {}, {}
    if variant == "every_branch":
        facts.confirmatory, facts.confirmatory_seeds = facts.comparisons[:2], [3, 4]
        facts.decisions = [("twenty seeds", "after seeds 0-2 had finished", "Because")]
        facts.encoding_effects = [{"loss": "mse", "diff": 0.2, "lo": 0.1, "hi": 0.3,
                                   "words": "one-hot is better (5 seeds each, paired)"}]
        facts.collapse_diagnostics = CollapseDiagnostics(10, 2, [DiagnosticTest("gradient norm", 0.3, 2, 3.7, 8, 0.02)],
                                                         "CE, integer labels, lr 0.001", 2)
    rep = Report.render(facts, draw=False)
    text = _text(rep.html())
    joined = re.findall(r"\w+[a-z)][.;:][A-Z][a-z]+", text)
    assert not joined, joined
    assert ("The 2020 weights were not found" in text) == (variant == "no_weights")
    assert ("has no loss study to show" in text) == (variant == "no_loss_study")
    if variant == "every_branch":
        assert "The seeds planned after a look at the results, alone." in text
        assert "2 collapsed runs share one setting" in text or "share one setting" in text


def test_verdicts_are_read_from_the_facts():
    """The verdicts the templates word: a re-score stands within a point and only on the log's own split; a
    collapse difference is decided paired on seeds where it can be; the ranking follows the resolved comparisons."""
    import dataclasses

    from synthetic_facts import synthetic_facts

    from wbc_utils import verdicts as v
    from wbc_utils.facts import Interval

    f = synthetic_facts()
    ce = f.orig("crossentropy")
    assert v.weights_reproduce_log(ce) is True                               # 69.1% against a log of 68.8%
    assert v.weights_reproduce_log(ce, "TEST_SIMPLE") is None                # another split: not checked
    far = dataclasses.replace(ce, logged_val=ce.true.value + 0.02)
    assert v.weights_reproduce_log(far) is False and far.true.holds(far.logged_val)  # inside the cell interval
    oh = [c for c in f.comparisons if c.encoding == "onehot"]
    assert v.collapses_more(oh) == oh                                        # Fisher 0.04, no paired test
    paired = [dataclasses.replace(c, mcnemar_p=0.0625) for c in oh]
    assert v.collapses_more(paired) == [] and v.collapses_differ(paired) == paired
    assert v.ranking(f)[0] == "integer"
    flipped = dataclasses.replace(f, comparisons=[dataclasses.replace(c, resolved=True, diff=Interval(0.1, 0.02, 0.18))
                                                  if c.encoding == "onehot" else c for c in f.comparisons])
    assert v.ranking(flipped)[0] == "both"
