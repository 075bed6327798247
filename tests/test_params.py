"""Parameters are checked before any work, and errors name the parameter and the valid values."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from wbc_utils.errors import ParameterError
from wbc_utils.params import ALL_LOSSES, PROFILES, Profile, RunParams, get_profile, parse_seeds


@pytest.mark.parametrize("kw, pattern", [
    ({"loss": "hinge"}, r"loss='hinge' is not valid; valid values: crossentropy, mse, huber"),
    ({"target_encoding": "ordinal"}, r"target_encoding='ordinal'.*integer, onehot"),
    ({"epochs": 0}, r"epochs must be at least 1"),
    ({"epochs": "10"}, r"epochs must be an integer, got '10' \(str\)"),
    ({"seed": 1.5}, r"seed must be an integer"),
    ({"image_size": [10, 80]}, r"image_size=\[10, 80\] is too small.*four 2x max-pools"),
    ({"image_size": "sixty"}, r"image_size must look like 60x80"),
    ({"batch_size": True}, r"batch_size must be an integer"),
    ({"validation": "heldout"}, r"validation='heldout'.*test, grouped"),
    ({"learning_rate": 0}, r"learning_rate must be between"),
    ({"early_stopping_patience": 3}, r"needs validation='grouped'"),
])
def test_bad_run_parameters(kw, pattern):
    with pytest.raises(ParameterError, match=pattern):
        RunParams(**kw)


def test_image_size_string_forms():
    assert RunParams(image_size="60x80").image_size == [60, 80]
    assert RunParams(image_size="120,160").image_size == [120, 160]


def test_unknown_parameter_is_named():
    with pytest.raises(ParameterError, match="unknown run parameter.*lossy"):
        RunParams.from_dict({"lossy": "mse"})


def test_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds(5) == [5]
    with pytest.raises(ParameterError, match="seeds must be integers, got 'a'"):
        parse_seeds("0,a")
    with pytest.raises(ParameterError, match="seeds must be an integer"):
        parse_seeds([0, 1.5])


def test_the_quick_profile_is_the_full_profile_on_two_seeds():
    """The pilot chose one scale at which the network learns (60x80, all of TRAIN, 6 epochs): the quick profile
    is that scale on the full profile's first seeds, so its runs are the full profile's runs of the same seeds
    (but for the profile's name) and the two reports differ only in how many seeds they rest on."""
    quick, full = get_profile("quick"), get_profile("full")
    assert quick.seeds == full.seeds[:len(quick.seeds)] and quick.pilot == full.pilot
    same = {json.dumps({**p.to_dict(), "profile": ""}, sort_keys=True) for p in full.runs()}
    assert all(json.dumps({**p.to_dict(), "profile": ""}, sort_keys=True) in same for p in quick.runs())
    assert [p.run_name for p in quick.main_runs()] == [p.run_name for p in full.main_runs()
                                                       if p.seed in quick.seeds]
    assert quick.train_subset == 0 and quick.image_size == [60, 80]


def test_profiles_and_overrides():
    quick = get_profile("quick")
    assert len(quick.seeds) >= 2, "paired comparisons need two seeds"
    main = [r for r in quick.runs() if quick.is_main(r.to_dict())]
    # cross-entropy with one-hot targets is the same function as with integer labels: run once
    assert len(main) == (3 * 2 - 1) * len(quick.seeds)
    assert not any(r.loss == "crossentropy" and r.target_encoding == "onehot" for r in main)
    assert quick.same_function("crossentropy", "onehot") and not quick.same_function("mse", "onehot")
    best = get_profile("best")  # one-hot cross-entropy alone (label smoothing possible) is kept
    assert all(r.target_encoding == "onehot" for r in best.runs())
    assert PROFILES["paper"].image_size == [240, 320] and PROFILES["paper"].epochs == 100
    small = quick.with_overrides(losses="mse", encodings="onehot", seeds="7")
    assert [(r.loss, r.target_encoding, r.seed) for r in small.runs()] == [("mse", "onehot", 7)]
    with pytest.raises(ParameterError, match="profile='fast'"):
        get_profile("fast")
    with pytest.raises(ParameterError, match="loss='l1'"):
        quick.with_overrides(losses="mse,l1")


def test_run_names_are_unique_within_profiles():
    for p in PROFILES.values():
        names = [r.run_name for r in p.runs()]
        assert len(names) == len(set(names))


def test_notebook_parameters_match_run_params():
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "03_training.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "the training notebook must have exactly one 'parameters' cell"
    src = "".join(cells[0]["source"])
    names = {line.split(":")[0].strip() for line in src.splitlines() if line and not line.startswith("#")}
    fields = {f.name for f in dataclasses.fields(RunParams)}
    assert fields <= names
    assert names - fields == {"output_dir", "data_dir", "reuse", "force"}
    # every default in the notebook is a valid RunParams value
    ns: dict = {}
    exec(src, ns)
    RunParams.from_dict({k: ns[k] for k in fields})


def test_the_full_profile_follows_its_pilot():
    """The full profile's scale is what the pilot's rule (analysis.choose_design) reads from the committed pilot
    runs (results/pilot/): a change to either shows here."""
    from wbc_utils.config import RESULTS
    from wbc_utils.sections import pilot_of

    full = get_profile("full")
    assert full.pilot == "pilot" and full.validation == "test" and full.train_subset == 0
    assert full.order == "seed" and full.precision == "float32"
    rec = pilot_of(full.pilot, RESULTS)
    if rec is None:
        pytest.skip("results/pilot/ is not committed yet")
    c = rec["choice"]
    assert (full.learning_rate, full.image_size, full.epochs) == (c["learning_rate"], c["image_size"], c["epochs"])
    assert len(full.seeds) >= c["seeds"]
    assert sorted(ctl["learning_rate"] for ctl in full.controls) == c["control_rates"]
    # every setting on the same seeds, seed by seed
    runs = full.runs()
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)


def test_profiles_say_what_they_are_for_and_name_their_losses():
    kinds = {"smoke": "study", "quick": "study", "paper": "study", "collapse": "collapse", "pilot": "pilot",
             "best": "lab"}
    assert kinds.items() <= {p.name: p.kind for p in PROFILES.values()}.items()
    assert PROFILES["quick"].losses == PROFILES["paper"].losses == ("crossentropy", "mse", "huber")
    assert PROFILES["smoke"].losses == ALL_LOSSES  # the pipeline check trains every registered loss
    with pytest.raises(TypeError, match="losses"):  # no default: a new loss joins only the profiles that name it
        Profile(name="x", description="", kind="study", image_size=[60, 80], epochs=1, seeds=[0])
    with pytest.raises(ParameterError, match="kind='loss'.*study, collapse, lab, pilot"):
        dataclasses.replace(PROFILES["quick"], kind="loss")
    assert get_profile("quick").with_overrides(losses="all").loss_names == ("crossentropy", "mse", "huber")


def test_a_study_recorded_before_profiles_had_a_kind_takes_the_built_in_one():
    from wbc_utils.runs import profile_of
    from wbc_utils.study import _profile_dict

    old = {k: v for k, v in _profile_dict(PROFILES["best"]).items() if k != "kind"}
    assert profile_of("best", {"profile_settings": old}).kind == "lab"
    assert profile_of("mine", {"profile_settings": {**old, "name": "mine"}}).kind == "study"
