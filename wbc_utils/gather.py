"""Gathering the report's facts: every artifact the report reads, read once here into :mod:`wbc_utils.facts`.

:func:`build_facts` loads a study (and its pilot, collapse and best studies where they exist) through
:mod:`wbc_utils.runs` and :mod:`wbc_utils.analysis`, and returns a :class:`~wbc_utils.facts.ReportFacts`.
"""
from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pandas as pd

from . import CLASSES, registry
from . import analysis as an
from .beyond import lab_and_final
from .config import RESULTS
from .data import build_manifest
from .facts import (
    Artifacts,
    CollapseDiagnostics,
    CollapseRow,
    Comparison,
    Counts,
    DiagnosticTest,
    Interval,
    OriginalModel,
    Recipe,
    ReportFacts,
    Settings,
    SplitCounts,
    _f,
)
from .model import build_model, paper_param_count
from .registry import INTEGER, ONEHOT
from .runs import Run, load_study, profile_of, study_record
from .slides import find_originals, load_pairs
from .stats import mcnemar_exact


def counts_of(manifest) -> Counts:
    f = manifest.frame
    splits = {}
    two = {}
    for split, g in f.groupby("split"):
        splits[split] = SplitCounts(len(g), int(g["slide"].nunique()), int(g["cell"].nunique()),
                                    {c: int(g.loc[g["class"] == c, "cell"].nunique()) for c in CLASSES})
        two[split] = int((g.groupby("cell")["class"].nunique() > 1).sum())
    test = f[f["split"] == "TEST"]
    unseen = test[~test["shared"]]
    train = f[f["split"] == "TRAIN"]
    per_k = train.dropna(subset=["k", "slide"]).groupby(["class", "k"])["slide"].nunique()
    return Counts(splits=splits, shared_cells=int(test.loc[test["shared"], "cell"].nunique()),
                  shared_images=int(test["shared"].sum()), unseen_cells=int(unseen["cell"].nunique()),
                  unseen_images=len(unseen),
                  unseen_per_class_cells={c: int(unseen.loc[unseen["class"] == c, "cell"].nunique()) for c in CLASSES},
                  two_label_cells=two,
                  kgroup_slides=[int(per_k.min()), int(per_k.max())] if len(per_k) else None,
                  unmapped_files=int(dict(manifest.sources).get("none", 0)))


def _recipe(r: dict) -> Recipe:
    return Recipe(loss=r["loss"], encoding=r["encoding"], same_runs_as=r.get("same_runs_as") or "",
                  seeds=int(r.get("seeds") or 0), finished=int(r.get("finished") or 0),
                  collapsed=int(r.get("collapsed") or 0), unseen=Interval.of(r, "unseen"),
                  test=Interval.of(r, "test"), cell=Interval.of(r, "unseen_cell"), simple=Interval.of(r, "simple"),
                  paper_metric=_f(r.get("paper_metric_test_mean")),
                  train_accuracy=_f(r.get("final_train_accuracy_mean")),
                  unseen_sd=_f(r.get("unseen_sd")), top_class_share=_f(r.get("top_class_share")))


def _collapsed_seeds(summary, r: dict) -> tuple[int, ...]:
    rows = an.runs_for(summary, r["loss"], r["encoding"])
    return tuple(sorted(int(x) for x in rows[rows["collapsed"] == True]["seed"]))  # noqa: E712


def _setting(loss: str, enc: str) -> str:
    return f"{registry.get(loss).short}, {registry.ENCODING_SHORT[enc]}"


def _per_class(summary) -> dict[str, list[dict]]:
    """Each setting's seed-pooled recall per class on unseen TEST cells, with its interval and cells."""
    return {_setting(loss, enc): an.per_class(an.stack(an.runs_for(summary, loss, enc)))
            for loss, enc in an.recipes(summary)}


def _per_seed(summary) -> dict[str, dict[int, float]]:
    """Each setting's accuracy on unseen TEST cells, seed by seed (finished runs)."""
    out = {}
    for loss, enc in an.recipes(summary):
        g = an.runs_for(summary, loss, enc)
        out[_setting(loss, enc)] = {int(s): float(v) for s, v in zip(g["seed"], g["unseen_accuracy"])}
    return out


def _comparison(r: dict) -> Comparison:
    eq = r.get("equivalence")
    return Comparison(encoding=r["encoding"], a=r["a"], b=r["b"], name=r["comparison"],
                      diff=Interval(_f(r["diff"]), _f(r["lo"]), _f(r["hi"]), _f(r.get("se")), _f(r.get("df"))),
                      resolved=bool(r["resolved"]), equivalence=None if eq is None or eq != eq else float(eq),
                      words=r["words"], paired=bool(r.get("paired")), mde=_f(r.get("mde")),
                      n_seeds_a=int(r.get("n_seeds_a") or 0), n_seeds_b=int(r.get("n_seeds_b") or 0),
                      unpaired=Interval(_f(r.get("unpaired_diff")), _f(r.get("unpaired_lo")), _f(r.get("unpaired_hi")),
                                        _f(r.get("unpaired_se")), _f(r.get("unpaired_df"))),
                      collapsed_a=int(r.get("collapsed_a") or 0), n_a=int(r.get("n_a") or 0),
                      collapsed_b=int(r.get("collapsed_b") or 0), n_b=int(r.get("n_b") or 0),
                      fisher_p=_f(r.get("fisher_p")),
                      learned=Interval(_f(r.get("learned_diff")), _f(r.get("learned_lo")), _f(r.get("learned_hi"))),
                      learned_words=r.get("learned_words") or "", learned_seeds=str(r.get("learned_seeds") or ""))


def _with_mcnemar(c: Comparison, summary) -> Comparison:
    """The comparison with its collapses paired on the seeds both sides trained (exact McNemar)."""
    def collapsed(loss: str) -> dict[int, bool]:
        g = an.runs_for(summary, loss, c.encoding)
        return {int(s): v is True for s, v in zip(g["seed"], g["collapsed"])}
    a, b = collapsed(c.a), collapsed(c.b)
    shared = sorted(set(a) & set(b))
    only_a = sum(a[s] and not b[s] for s in shared)
    only_b = sum(b[s] and not a[s] for s in shared)
    return dataclasses.replace(c, mcnemar_p=mcnemar_exact(only_a, only_b))


def _original(r: dict) -> OriginalModel:
    c = r.get("collapsed")
    return OriginalModel(loss=r["loss"], logged_val=_f(r.get("logged_final_val_accuracy")),
                         logged_train=_f(r.get("logged_final_train_accuracy")),
                         recomputed_metric=_f(r.get("recomputed_2020_metric")),
                         class0_share=_f(r.get("argmax_class0_share")),
                         true=Interval.of(r, "true_accuracy", "true_lo", "true_hi"),
                         unseen=Interval.of(r, "unseen_accuracy", "unseen_lo", "unseen_hi"),
                         regression=Interval.of(r, "regression_accuracy", "regression_lo", "regression_hi"),
                         unit_inputs=_f(r.get("unit_inputs_accuracy")),
                         spread_within_image=_f(r.get("score_spread_within_image")),
                         collapsed=None if c is None or c != c else bool(c))


def _collapse_rows(table) -> list[CollapseRow]:
    if table is None or not len(table):
        return []
    return [CollapseRow(setting=r["setting"], runs=int(r["runs"]), collapsed=int(r["collapsed"]),
                        top_class_share=_f(r["top_class_share"]), output_spread=_f(r["output_spread"]),
                        seeds=str(r["seeds"]), is_2020=bool(r["is_2020"]), fisher_p=_f(r["fisher_p_vs_2020"]),
                        p_holm=_f(r["p_holm"])) for r in table.to_dict("records")]


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
    mse = table[(table["loss"] == "mse") & (table["encoding"] == ONEHOT)]
    ce = table[table["loss"] == "crossentropy"]
    if len(mse):
        ce = ce[(ce["image_size"] == mse["image_size"].iloc[0]) & (ce["learning_rate"] == mse["learning_rate"].iloc[0])]
    spread = an.paired_spread(summary, ce["candidate"].iloc[0], mse["candidate"].iloc[0]) \
        if len(ce) and len(mse) else None
    return {"name": name, "table": table, "spread": spread, "choice": an.choose_design(table, spread)}


def _settings(profile: str, study, allruns, metrics) -> Settings:
    s = study.settings
    plan = study.plan
    said = {"description": plan.description, "trades": plan.trades} if plan is not None else s
    fin = allruns[allruns.status == "finished"]
    devices = sorted({m.get("software", {}).get("device") for m in (metrics or {}).values()} - {None})
    any_metrics = next(iter((metrics or {}).values()), {})
    return Settings(profile=profile, description=said.get("description", ""), trades=said.get("trades") or "",
                    image_size=list(s.get("image_size", [240, 320])), epochs=int(s.get("epochs") or 0),
                    learning_rate=float(s.get("learning_rate") or 0), batch_size=int(s.get("batch_size") or 32),
                    train_subset=int(s.get("train_subset") or 0),
                    seeds=sorted({int(v) for v in fin["seed"]}),
                    seeds_planned=list(plan.seeds) if plan is not None else list(s.get("seeds", [])),
                    planned=len(plan.runs()) if plan is not None else len(allruns), finished=len(fin),
                    failed=int((allruns.status == "failed").sum()),
                    incomplete=int((allruns.status == "incomplete").sum()), controls=len(study.controls),
                    precision=any_metrics.get("precision_policy", "float32"), devices=devices,
                    pilot=s.get("pilot") or "")


def collapse_diagnostics(ce) -> CollapseDiagnostics:
    """Dead channels and gradient norm after the first epoch: collapsed cross-entropy runs against the rest."""
    from scipy.stats import mannwhitneyu

    diags = {r.run_name: Run(r.run_dir).diagnostics() for r in ce.itertuples()}
    col = ce[ce.collapsed == True].run_name.tolist()  # noqa: E712
    ok = ce[ce.collapsed != True].run_name.tolist()  # noqa: E712

    def last(runs, key):
        out = []
        for r in runs:
            v = (diags.get(r) or {}).get("after_epoch_1", {}).get(key)
            if isinstance(v, dict) and v:
                v = list(v.values())[-1]
            if v is not None:
                out.append(float(v))
        return np.array(out)

    tests = []
    if len(col) >= 2 and len(ok) >= 2:
        for key, words in (("dead_channels", "share of the last convolution's channels that are 0 on every probe "
                                             "image"), ("grad_norm_total", "gradient norm")):
            a, b = last(col, key), last(ok, key)
            if len(a) >= 2 and len(b) >= 2:
                tests.append(DiagnosticTest(words, float(np.median(a)), len(a), float(np.median(b)), len(b),
                                            float(mannwhitneyu(a, b).pvalue)))
    settings = ce[ce.collapsed == True].apply(lambda r: an.setting_name(r), axis=1).value_counts() \
        if len(col) else pd.Series(dtype=int)  # noqa: E712
    common = len(settings) and settings.iloc[0] > len(col) / 2
    return CollapseDiagnostics(len(ce), len(col), tests, str(settings.index[0]) if common else "",
                               int(settings.iloc[0]) if common else 0)


def build_facts(profile: str, runs_root=None, best_profile: str = "best", collapse_profile: str = "collapse",
                loss_profile: str = "") -> ReportFacts:
    """Read a study's artifacts (and its pilot, collapse and best studies where they exist) into facts."""
    manifest = build_manifest()
    art = Artifacts(manifest=manifest)
    record = study_record(profile, runs_root)
    prof = profile_of(profile, record) if record is not None else None
    if prof is not None and prof.kind == "lab":  # a lab's report: the loss study beside it is another profile's
        best_profile = profile
        profile = loss_profile or ("quick" if study_record("quick", runs_root) is not None else "")
    pairs = load_pairs()
    facts = ReportFacts(profile=profile, generated=datetime.date.today().isoformat(), counts=counts_of(manifest),
                        has_originals=find_originals(manifest.images_root) is not None, overlap_pairs=len(pairs),
                        overlap_same_cell=int(pairs["same_cell"].sum()) if len(pairs) else 0,
                        paper_params=paper_param_count(240, 320),
                        software={}, best_profile=best_profile, collapse_profile=collapse_profile,
                        decisions=[(w, when, why) for p, w, when, why in an.DESIGN_DECISIONS if p == profile],
                        pilot_revisions=list(an.PILOT_RULE_REVISIONS[1:]), artifacts=art)
    if profile and study_record(profile, runs_root) is not None:
        study = load_study(profile, runs_root)
        art.study, art.summary, art.allruns = study, study.main, study.runs
        art.histories, art.metrics, art.orig = study.histories, study.metrics, study.original()
        facts.settings = _settings(profile, study, study.runs, study.metrics)
        facts.software = {k: str(v) for k, v in next(iter(study.metrics.values()), {}).get("software", {}).items()}
        facts.losses = an.losses_of(study.main)
        facts.recipes = [dataclasses.replace(_recipe(r), collapsed_seeds=_collapsed_seeds(study.main, r))
                         for r in an.group_table(study.main).to_dict("records")]
        facts.comparisons = [_with_mcnemar(_comparison(r), study.main) for r in
                             an.paired_table(study.main).to_dict("records")]
        later = study.main[study.main["seed"].isin(an.CONFIRMATORY_SEEDS.get(profile, ()))]
        done = sorted({int(s) for s in later.loc[later["status"] == "finished", "seed"]})
        if len(done) >= 2:
            facts.confirmatory_seeds = done
            facts.confirmatory = [_comparison(r) for r in an.paired_table(later).to_dict("records")]
        facts.per_class, facts.per_seed = _per_class(study.main), _per_seed(study.main)
        ee = an.encoding_effect(study.main)
        facts.encoding_effects = ee.to_dict("records") if ee is not None and len(ee) else []
        if art.orig and art.orig.get("models"):
            ot = an.original_table(art.orig)
            facts.original = {r["loss"]: _original(r) for r in ot.to_dict("records")
                              if not pd.isna(r.get("true_accuracy", np.nan))}
            facts.original_split = art.orig.get("split", "")
        facts.collapse_here = _collapse_rows(an.collapse_table(study.runs[study.runs.loss == "crossentropy"]))
        facts.model_params = build_model(facts.settings.image_size).count_params()
        pilot = facts.settings.pilot
        art.pilot = pilot_of(pilot, runs_root) or pilot_of(pilot, RESULTS)  # the pilot ships in results/
        if art.pilot:
            ch, st = art.pilot["choice"], facts.settings
            facts.pilot_followed = (ch["learning_rate"] == st.learning_rate and ch["image_size"] == st.image_size
                                    and ch["epochs"] == st.epochs and ch["seeds"] <= len(st.seeds_planned))
    if collapse_profile and collapse_profile != profile and study_record(collapse_profile, runs_root) is not None:
        c = load_study(collapse_profile, runs_root)
        art.collapse = {"allruns": c.runs, "histories": c.histories, "table": an.collapse_table(c.runs),
                        "settings": c.settings}
        facts.collapse_study = _collapse_rows(art.collapse["table"])
    runs = art.collapse["allruns"] if art.collapse else art.allruns
    if runs is not None and len(runs):
        ce = runs[(runs.loss == "crossentropy") & (runs.target_encoding == INTEGER) & (runs.status == "finished")]
        facts.collapse_diagnostics = collapse_diagnostics(ce)
    best = lab_and_final(best_profile, runs_root) if best_profile else None
    if best is not None and len(best["final_runs"]):
        art.best = best
        facts.best = best_findings(best)
        if not facts.software:
            facts.software = {k: str(v) for k, v in
                              Run(best["final_runs"].iloc[0].run_dir).metrics().get("software", {}).items()}
    return facts


def best_findings(best: dict) -> dict:
    """The best profile's headline numbers, from its lab and final runs."""
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
            "lab": [{"design": r.design, "mean": r.val_accuracy, "sd": None if r.val_sd != r.val_sd else r.val_sd,
                     "folds": r.fold_accuracies,
                     "tied": bool(r.tied)} for r in lab.itertuples()] if len(lab) else []}
