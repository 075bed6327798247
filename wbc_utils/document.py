"""A numbered document rendered from Markdown/Jinja2 templates: sections, figures, tables, references.

The report's prose lives in ``wbc_utils/templates/report/*.md.j2``, one template per section. A template
is Markdown with Jinja2 expressions over typed facts (:mod:`wbc_utils.facts`) and calls these helpers:

* ``{{ section("Methods", "methods") }}``, ``{{ subsection("Intervals", "intervals") }}``: numbered headings
  (``numbered=False`` for the abstract, references and appendices);
* ``{% call figure("fig:curves", "curves", loss="mse") %}caption{% endcall %}``: a numbered figure drawn by
  the figure registry (:data:`wbc_utils.sections.FIGURES`); nothing is shown when it draws nothing;
* ``{% call table("tab:accuracy", "accuracy") %}caption{% endcall %}``: a numbered table built by the table
  registry (:mod:`wbc_utils.tables`); ``md_table`` numbers a Markdown table written in the template itself;
* ``{{ ref("fig:curves") }}`` ("Figure 4"), ``{{ ref("sec:methods") }}`` ("section 3"), ``{{ cite("guo2017") }}``
  ("[5]"): resolved after the whole document is rendered, so a reference may point forwards.

Numbers are never typed: they come from the order of definition. A reference to a label that was never
defined renders as "??" and :meth:`Document.unresolved` lists it (the tests fail on it).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import matplotlib.pyplot as plt
import mistune

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
.wbc table.wbc-table td.num { white-space: nowrap; }
.wbc table.claims { width: 100%; }
.wbc table.small { font-size: 7.4pt; }
.wbc table.claims td { white-space: normal; }
.wbc table.claims td:nth-child(1) { width: 22%; } .wbc table.claims td:nth-child(2) { width: 26%; }
.wbc table tr { break-inside: avoid; page-break-inside: avoid; }
.wbc ol.references li { margin-bottom: 3pt; }
/* JupyterLab keeps each cell's output on one page; a report section is longer than that */
.jp-OutputArea-child, .jp-Cell, .jp-Cell-outputWrapper {
  break-inside: auto !important; page-break-inside: auto !important; }
.wbc .note { font-size: 9pt; color: #444; }
@page { size: A4; margin: 14mm 13mm 14mm 13mm; }
@media print { .wbc { font-size: 10pt; } }
</style>"""

_MARKDOWN = mistune.create_markdown(escape=False, plugins=["table"])  # templates may write <sub>, &plusmn;
_BLOCK = re.compile(r"@@BLOCK(\d+)@@")
_REF = re.compile(r"@@(REF|NUM|CITE):([^@]+)@@")
_KINDS = {"fig": "Figure", "tab": "Table", "sec": "section", "app": "Appendix"}


def markdown(text: str) -> str:
    """Markdown (tables included) to HTML."""
    return _MARKDOWN(text)


def inline(s: str) -> str:
    """One table cell's text: escaped, with **bold**, *italics* and `code` kept, no paragraph around it."""
    if s.strip() in ("", "-"):
        return html.escape(s)  # "-" alone would be read as a list item
    out = markdown(s).strip()
    if out.startswith("<p>") and out.endswith("</p>") and out.count("<p>") == 1:
        out = out[3:-4]
    return out


def figure_html(fig, width: float = 100.0) -> str:
    """A matplotlib figure as an embedded PNG (closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" style="width:{width:.0f}%" alt="figure">'


def table_html(frame, cls: str = "") -> str:
    """A DataFrame as an HTML table; cells that hold a number or an interval do not wrap."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for r in frame.itertuples(index=False):
        cells = []
        for v in r:
            s = "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            num = any(ch.isdigit() for ch in s) and len(s) <= 26
            cells.append(f'<td{" class=num" if num else ""}>{inline(s)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="wbc-table {cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


@dataclasses.dataclass(frozen=True)
class Reference:
    """One entry of the reference list."""

    key: str
    text: str  # Markdown: authors, year, title, venue
    url: str = ""


@dataclasses.dataclass
class Document:
    """Renders section templates in order into numbered HTML; one instance per report.

    ``figures`` and ``tables`` map a name to a function of the facts (and keyword arguments) that returns a
    matplotlib figure or a DataFrame (or None: nothing to show). With ``draw=False`` figures are numbered
    but not drawn (a placeholder), which is how the tests render a report from synthetic facts quickly.
    """

    template_dir: Path
    figures: dict[str, Callable[..., Any]]
    tables: dict[str, Callable[..., Any]]
    references: dict[str, Reference]
    draw: bool = True
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    cited: list[str] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=lambda: {"fig": 0, "tab": 0, "sec": 0, "sub": 0,
                                                                        "app": 0})
    html_sections: dict[str, str] = dataclasses.field(default_factory=dict)
    _blocks: list[str] = dataclasses.field(default_factory=list)
    _missing: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.template_dir)),
                                      undefined=jinja2.StrictUndefined, autoescape=False,
                                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        self._facts: Any = None

    # ------------------------------------------------------------------ rendering

    def render(self, name: str, template: str, facts: Any, **context: Any) -> str:
        """Render one section's template with ``facts`` into HTML (references resolved by :meth:`finish`)."""
        self._facts = facts
        self._blocks = []
        helpers = {"section": self.section, "subsection": self.subsection, "appendix": self.appendix,
                   "figure": self.figure, "table": self.table, "md_table": self.md_table, "ref": self.ref,
                   "num": self.num, "cite": self.cite, "references": self.reference_list}
        text = self.env.get_template(template).render(f=facts, **helpers, **context)
        self.html_sections[name] = self._assemble(text)
        return self.html_sections[name]

    def _assemble(self, text: str) -> str:
        """Markdown between blocks rendered as HTML; a heading is kept on one page with what follows it."""
        parts = _BLOCK.split(text)
        out: list[str] = []
        pending: str | None = None  # a heading waiting for the block after it
        for i, part in enumerate(parts):
            if i % 2:
                block = self._blocks[int(part)]
                if block.startswith("<h"):
                    if pending is not None:
                        out.append(pending)
                    pending = block
                    continue
                chunks = [block]
            else:
                if not part.strip():
                    continue
                chunks = _split_first(markdown(part))
            if pending is not None:
                chunks[0] = f'<div class="keep">{pending}{chunks[0]}</div>'
                pending = None
            out.extend(chunks)
        if pending is not None:
            out.append(pending)
        return '<div class="wbc">' + "\n".join(out) + "</div>"

    def _block(self, html_block: str) -> str:
        self._blocks.append(html_block)
        return f"\n\n@@BLOCK{len(self._blocks) - 1}@@\n\n"

    def _define(self, label: str, kind: str, number: str) -> None:
        if label in self.labels:
            raise ValueError(f"label {label!r} is defined twice in the report's templates")
        self.labels[label] = f"{_KINDS.get(kind, kind)} {number}"

    # ------------------------------------------------------------------ helpers the templates call

    def section(self, title: str, label: str = "", numbered: bool = True) -> str:
        """A level-2 heading, numbered 1, 2, ... unless ``numbered`` is False."""
        text = title
        if numbered:
            self.counters["sec"] += 1
            self.counters["sub"] = 0
            text = f"{self.counters['sec']}. {title}"
            if label:
                self._define(f"sec:{label}", "sec", str(self.counters["sec"]))
        return self._block(f"<h2>{html.escape(text)}</h2>")

    def subsection(self, title: str, label: str = "") -> str:
        """A level-3 heading numbered within its section (4.1, 4.2, ...)."""
        self.counters["sub"] += 1
        number = f"{self.counters['sec']}.{self.counters['sub']}"
        if label:
            self._define(f"sec:{label}", "sec", number)
        return self._block(f"<h3>{html.escape(number + ' ' + title)}</h3>")

    def appendix(self, title: str, label: str = "") -> str:
        """An appendix heading: Appendix A, B, ..."""
        letter = "ABCDEFGHIJ"[self.counters["app"]]
        self.counters["app"] += 1
        if label:
            self._define(f"app:{label}", "app", letter)
        return self._block(f"<h2>{html.escape(f'Appendix {letter}: {title}')}</h2>")

    def figure(self, label: str, name: str, width: float = 100.0, caller: Callable[[], str] | None = None,
               **kwargs: Any) -> str:
        """A numbered figure drawn by the figure registry; its caption is the call block's body."""
        if name not in self.figures:
            raise KeyError(f"figure {name!r} is not in the figure registry ({', '.join(sorted(self.figures))})")
        if self.draw:
            fig = self.figures[name](self._facts, **kwargs)
            if fig is None:
                return ""
            img = figure_html(fig, width)
        else:
            img = f'<div class="placeholder">[figure {html.escape(name)}]</div>'
        self.counters["fig"] += 1
        self._define(label, "fig", str(self.counters["fig"]))
        cap = inline(f"**Figure {self.counters['fig']}.** {_caption(caller)}")
        return self._block(f"<figure>{img}<figcaption>{cap}</figcaption></figure>")

    def table(self, label: str, name: str, cls: str = "", keep: bool = True,
              caller: Callable[[], str] | None = None, **kwargs: Any) -> str:
        """A numbered table built by the table registry (caption above); nothing when it has no rows."""
        frame = self.tables[name](self._facts, **kwargs)
        if frame is None or len(frame) == 0:
            return ""
        return self._table(label, table_html(frame, cls), _caption(caller), keep)

    def md_table(self, label: str, caption: str, cls: str = "", keep: bool = False,
                 caller: Callable[[], str] | None = None) -> str:
        """A numbered table written in Markdown in the template (the call block's body)."""
        body = markdown(caller() if caller else "").replace("<table>", f'<table class="wbc-table {cls}">')
        return self._table(label, body, caption, keep)

    def _table(self, label: str, body: str, caption: str, keep: bool) -> str:
        self.counters["tab"] += 1
        self._define(label, "tab", str(self.counters["tab"]))
        n = self.counters["tab"]
        cap = f'<div class="caption">{inline(f"**Table {n}.** {caption}")}</div>'
        if keep:
            return self._block(f'<div class="keep">{cap}{body}</div>')
        return self._block(f'<div class="keep">{cap}</div>{body}')  # a long table may break across pages

    def ref(self, label: str) -> str:
        """'Figure 4', 'Table 2', 'section 4.1', 'Appendix A' (resolved after rendering)."""
        return f"@@REF:{label}@@"

    def num(self, label: str) -> str:
        """The bare number of a label: '4', '4.1', 'A'."""
        return f"@@NUM:{label}@@"

    def cite(self, *keys: str) -> str:
        """'[3]' or '[3, 5]': numbered in order of first citation."""
        for k in keys:
            if k not in self.references:
                raise KeyError(f"reference {k!r} is not in the reference list ({', '.join(sorted(self.references))})")
            if k not in self.cited:
                self.cited.append(k)
        return "[" + ", ".join(f"@@CITE:{k}@@" for k in keys) + "]"

    def reference_list(self) -> str:
        """Every cited reference, numbered in order of first citation (placed by the references template)."""
        items = []
        for k in self.cited:
            r = self.references[k]
            link = f' <a href="{html.escape(r.url)}">{html.escape(r.url)}</a>' if r.url else ""
            items.append(f"<li>{inline(r.text)}{link}</li>")
        return self._block('<ol class="references">' + "".join(items) + "</ol>")

    # ------------------------------------------------------------------ after rendering

    def finish(self) -> None:
        """Resolve every reference and citation in the rendered sections."""
        def sub(m: re.Match) -> str:
            kind, key = m.group(1), m.group(2)
            if kind == "CITE":
                return str(self.cited.index(key) + 1)
            if key not in self.labels:
                self._missing.append(key)
                return "??"
            return self.labels[key] if kind == "REF" else self.labels[key].split(" ", 1)[1]
        self.html_sections = {k: _REF.sub(sub, v) for k, v in self.html_sections.items()}

    def unresolved(self) -> list[str]:
        """Labels referred to but never defined (after :meth:`finish`)."""
        return sorted(set(self._missing))

    def html(self) -> str:
        return STYLE + "\n".join(self.html_sections.values())


def _caption(caller: Callable[[], str] | None) -> str:
    return " ".join((caller() if caller else "").split())


def _split_first(block: str) -> list[str]:
    """A run of HTML blocks split after its first paragraph (a heading is kept with that one only)."""
    if block.startswith("<p>") and "</p>\n" in block:
        i = block.index("</p>\n") + len("</p>\n")
        rest = block[i:]
        return [block[:i], rest] if rest.strip() else [block[:i]]
    return [block]
