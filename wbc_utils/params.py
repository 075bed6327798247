"""Run parameters, their validation, and the study profiles.

A *run* is one training of one model: one loss, one target encoding, one seed.
A *profile* is a named study: the set of runs and their shared settings.
Every parameter is checked before any work starts; an error names the
parameter and lists what it accepts.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any

from . import NATIVE_SIZE, registry
from .errors import ParameterError
from .registry import ENCODINGS, INTEGER, ONEHOT

#: validation="test": TEST is the validation set, as in 2020 (run folder names omit the default).
TEST_AS_VALIDATION = "test"
VALIDATIONS = (TEST_AS_VALIDATION, "grouped", "none")
#: arch="unet_encoder": the 2020 network (the encoder half of a U-Net).
ARCH_2020 = "unet_encoder"
ARCHS = (ARCH_2020, "he", "bn", "wbcnet")
AUGMENTS = ("none", "geometric", "geometric+color", "geometric+hed")
LR_SCHEDULES = ("constant", "cosine")
INPUT_SCALINGS = ("raw", "unit")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
#: What a profile is for, which decides how its report and figures read it:
#: a loss study (losses x encodings x seeds), a collapse study (one recipe against one change at a time), a lab
#: (candidate designs on folds of TRAIN, then the kept design), or a pilot (candidates that size another profile).
KINDS = ("study", "collapse", "lab", "pilot")
#: ``Profile(losses=ALL_LOSSES)``: every registered loss (the smoke profile, which checks the pipeline for each).
ALL_LOSSES = "all"
#: The three losses of the 2020 study (cross-entropy, MSE, Huber), in its order: the loss studies' losses.
LOSSES_2020 = tuple(s.name for s in registry.BUILTIN if s.is_2020)


#: Values an earlier version wrote, by parameter: ``"paper"`` once meant the integer-label encoding, TEST as the
#: validation set and the 2020 network (and still names the profile that reproduces the paper). A params.json,
#: a study record or a call with an old value still works (:func:`upgrade`); ``python -m wbc_utils migrate``
#: renames the run folders that carry it.
LEGACY_VALUES: dict[str, dict[str, str]] = {
    "target_encoding": registry.LEGACY_ENCODINGS,
    "validation": {"paper": TEST_AS_VALIDATION},
    "arch": {"paper": ARCH_2020},
}


def upgrade(params: dict) -> dict:
    """``params`` (a run's parameters, or any dict with some of their keys) with the values an earlier version
    wrote renamed to today's (:data:`LEGACY_VALUES`); a copy, other keys untouched."""
    out = dict(params)
    for key, renamed in LEGACY_VALUES.items():
        if isinstance(out.get(key), str) and out[key] in renamed:
            out[key] = renamed[out[key]]
    return out


def upgrade_profile_settings(settings: dict) -> dict:
    """A profile's recorded settings (study.json's ``profile_settings``) with old values renamed: its own
    validation and arch, its encodings, its controls and its extra parameters."""
    out = upgrade(settings)
    if out.get("encodings"):
        out["encodings"] = [LEGACY_VALUES["target_encoding"].get(e, e) for e in out["encodings"]]
    if out.get("controls"):
        out["controls"] = [upgrade(c) for c in out["controls"]]
    if isinstance(out.get("extra"), dict):
        out["extra"] = upgrade(out["extra"])
    return out


def check_choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ParameterError(f"{name}={value!r} is not valid; valid values: {', '.join(valid)}")
    return value


def check_loss(loss: str) -> str:
    """``loss`` when it is registered (:mod:`wbc_utils.registry`), else a ParameterError naming the choices."""
    return registry.get(loss).name


def check_encoding(encoding: str) -> str:
    """The encoding (an old value renamed: :data:`LEGACY_VALUES`), else a ParameterError naming the choices."""
    return registry.check_encoding(encoding)


#: The side of the window cropped around the white cell for ``view="cell"`` (native pixels); ``cell<N>`` picks
#: another (``cell96``: a tighter window, so more of the input's pixels show the cell itself).
CELL_WINDOW = 128


#: Fills for a crop window that runs past the field's edge (``cell-reflect``, ``cell96-black``); plain ``cell``
#: repeats the edge pixels (:data:`wbc_utils.cellcrop.BORDERS`).
CROP_BORDERS = ("edge", "reflect", "black")
_VIEW = re.compile(r"cell(\d+)?(?:-(" + "|".join(CROP_BORDERS) + r"))?")


def check_view(view: str) -> str:
    m = _VIEW.fullmatch(view) if isinstance(view, str) else None
    if view != "full" and (m is None or not 32 <= int(m.group(1) or CELL_WINDOW) <= 240):
        raise ParameterError(f"view={view!r} is not known; valid values: full (the whole field resized), cell (a "
                             f"{CELL_WINDOW}-pixel window around the white cell), or cell<N> for an N-pixel window, "
                             f"32 <= N <= 240 (e.g. cell96), each optionally with how a window past the field's "
                             f"edge is filled: -{', -'.join(CROP_BORDERS)} (e.g. cell96-reflect; default: edge)")
    return view


def cell_window(view: str) -> int | None:
    """The crop window of a cell view in native pixels, or None for the whole field."""
    check_view(view)
    return None if view == "full" else int(_VIEW.fullmatch(view).group(1) or CELL_WINDOW)


def crop_border(view: str) -> str | None:
    """How a cell view fills a window past the field's edge (``edge`` unless it names another), None for full."""
    check_view(view)
    return None if view == "full" else (_VIEW.fullmatch(view).group(2) or "edge")


def check_image_size(size: Sequence[int], name: str = "image_size") -> tuple[int, int]:
    """(height, width) as two integers the model can take, or a ParameterError that says what would."""
    try:
        h, w = (int(v) for v in size)
        if [h, w] != [v for v in size]:
            raise ValueError
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be two integers [height, width], got {size!r}") from None
    if h < 16 or w < 16:
        raise ParameterError(f"{name}={[h, w]} is too small: the model's four 2x max-pools need at least "
                             f"16 pixels on each side. Try [60, 80], [120, 160] or [240, 320].")
    if h > 4 * NATIVE_SIZE[0] or w > 4 * NATIVE_SIZE[1]:
        raise ParameterError(f"{name}={[h, w]} is larger than 4x the images' native {list(NATIVE_SIZE)}.")
    return h, w


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not lo < float(value) < hi:
        raise ParameterError(f"{name} must be between {lo} and {hi} (exclusive), got {value}")
    return float(value)


def parse_seeds(value: Any) -> list[int]:
    """Seeds from a list, a comma-separated string ('0,1,2') or a range ('0-4')."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        out: list[Any] = []
        for p in parts:
            if "-" in p[1:]:
                a, b = p.split("-", 1)
                try:
                    out.extend(range(int(a), int(b) + 1))
                except ValueError:
                    raise ParameterError(f"seeds: {p!r} is not an integer range like 0-4") from None
            else:
                try:
                    out.append(int(p))
                except ValueError:
                    raise ParameterError(f"seeds must be integers, got {p!r} in {value!r}") from None
        value = out
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ParameterError(f"seeds must be a non-empty list of integers, got {value!r}")
    return [_int("seeds", v, 0) for v in value]


def _field(default: Any, help: str, choices: Sequence[str] | Callable[[], Sequence[str]] | None = None) -> Any:
    """A run parameter: its default, what it does and (when it is a choice) what it accepts, a sequence or a
    function that returns one (the losses: the registry can grow). The command line's ``train`` options, the
    training notebook's parameters cell and ``--help`` are all read from these (:func:`field_choices`)."""
    meta = {"help": help, "choices": choices if callable(choices) else (tuple(choices) if choices else None)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_choices(field: dataclasses.Field) -> tuple | None:
    """The values a run parameter accepts, or None when it is not a choice."""
    c = field.metadata.get("choices")
    return tuple(c()) if callable(c) else c


@dataclasses.dataclass
class RunParams:
    """Everything that defines one training run (the papermill parameters)."""

    loss: str = _field("crossentropy", "the loss (wbc_utils.registry)", registry.names)
    target_encoding: str = _field(INTEGER, "integer: the class label fed to every loss (2020); onehot: "
                                  "one-hot targets against the softmax", ENCODINGS)
    seed: int = _field(0, "seeds the weights, the order of batches, augmentation and the validation split")
    epochs: int = _field(100, "epochs to train")
    batch_size: int = _field(32, "images per batch")
    image_size: list = _field([240, 320], "input size, height x width (e.g. 60x80)")
    train_subset: int = _field(0, "a class-balanced subset of TRAIN of this many images; 0 = all of TRAIN")
    validation: str = _field(TEST_AS_VALIDATION, "test: TEST as validation (as in 2020); grouped: held-out TRAIN "
                             "cells; none: all of TRAIN, no validation (TEST only scored at the end)", VALIDATIONS)
    val_fraction: float = _field(0.2, "share of TRAIN's same-cell clusters held out when validation=grouped "
                                 "(without folds)")
    folds: int = _field(0, "validation=grouped: split TRAIN's same-cell clusters into this many folds "
                        "(stratified by class, the same folds for every seed) and hold out one; 0 = no folds")
    fold: int = _field(0, "which fold is held out (0 to folds-1)")
    learning_rate: float = _field(1e-3, "Adam's learning rate")
    arch: str = _field(ARCH_2020, "the model: unet_encoder (the 2020 one), its variants he (He init) and "
                       "bn (BatchNorm), or wbcnet", ARCHS)
    input_scaling: str = _field("raw", "raw 0-255 pixels (2020) or unit 0-1", INPUT_SCALINGS)
    precision: str = _field("float32", "Keras dtype policy; auto = mixed_float16 on a GPU, mixed_bfloat16 on a CPU "
                            "with native bfloat16, else float32 (the model's last layer stays float32)", PRECISIONS)
    early_stopping_patience: int = _field(0, "epochs without validation improvement before stopping; 0 = off "
                                          "(needs validation=grouped)")
    view: str = _field("full", "full: the whole field resized; cell: a 128-pixel window around the white cell; "
                       "cell<N>: an N-pixel window (e.g. cell96)")
    augment: str = _field("none", "geometric: 8 flips/rotations + shifts; geometric+color: and RGB gain/offset "
                          "jitter; geometric+hed: and stain jitter in haematoxylin-eosin-DAB space",
                          AUGMENTS)
    lr_schedule: str = _field("constant", "cosine: decay to 1% over the run", LR_SCHEDULES)
    label_smoothing: float = _field(0.0, "label smoothing, cross-entropy only")
    tta: bool = _field(False, "average predictions over each image's 8 flips/rotations")
    width: int = _field(16, "wbcnet: filters of its first block (doubling per block)")
    profile: str = _field("custom", "the study this run belongs to (names its folder under the runs folder)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RunParams:
        for key, value in upgrade({k: getattr(self, k) for k in LEGACY_VALUES}).items():
            setattr(self, key, value)  # a value an earlier version wrote ("paper") reads as today's
        check_loss(self.loss)
        check_encoding(self.target_encoding)
        self.seed = _int("seed", self.seed, 0)
        self.epochs = _int("epochs", self.epochs, 1)
        self.batch_size = _int("batch_size", self.batch_size, 1)
        if isinstance(self.image_size, str):
            self.image_size = [v for v in self.image_size.lower().replace("x", ",").split(",") if v]
            try:
                self.image_size = [int(v) for v in self.image_size]
            except ValueError:
                raise ParameterError(f"image_size must look like 60x80 or [60, 80], got {self.image_size!r}") from None
        self.image_size = list(check_image_size(self.image_size))
        self.train_subset = _int("train_subset", self.train_subset, 0)
        check_choice("validation", self.validation, VALIDATIONS)
        self.val_fraction = _float("val_fraction", self.val_fraction, 0.0, 1.0)
        self.learning_rate = _float("learning_rate", self.learning_rate, 0.0, 1.0)
        check_choice("arch", self.arch, ARCHS)
        check_choice("input_scaling", self.input_scaling, INPUT_SCALINGS)
        check_choice("precision", self.precision, PRECISIONS)
        self.early_stopping_patience = _int("early_stopping_patience", self.early_stopping_patience, 0)
        self.folds = _int("folds", self.folds, 0)
        self.fold = _int("fold", self.fold, 0)
        if self.folds == 1 or (self.folds and self.validation != "grouped"):
            raise ParameterError(f"folds={self.folds} needs validation='grouped' and at least 2 folds (0 = none).")
        if self.fold and self.fold >= max(self.folds, 1):
            raise ParameterError(f"fold={self.fold} must be below folds={self.folds} (folds are numbered from 0).")
        check_view(self.view)
        check_choice("augment", self.augment, AUGMENTS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if isinstance(self.label_smoothing, numbers.Real) and not isinstance(self.label_smoothing, bool) \
                and self.label_smoothing == 0:
            self.label_smoothing = 0.0
        else:
            self.label_smoothing = _float("label_smoothing", self.label_smoothing, 0.0, 0.5)
            if not registry.get(self.loss).label_smoothing:
                takes = [s.name for s in registry.specs() if s.label_smoothing]
                raise ParameterError(f"label_smoothing={self.label_smoothing} applies to "
                                     f"loss={' or '.join(map(repr, takes))} only; set it to 0 for loss={self.loss!r}.")
        if not isinstance(self.tta, bool):
            raise ParameterError(f"tta must be True or False, got {self.tta!r} ({type(self.tta).__name__})")
        self.width = _int("width", self.width, 4)
        if self.early_stopping_patience and self.validation != "grouped":
            raise ParameterError("early_stopping_patience needs validation='grouped': with validation='test' "
                                 "it would choose the epoch on TEST, which is what this study must not do.")
        if not isinstance(self.profile, str) or not self.profile.replace("-", "").replace("_", "").isalnum():
            raise ParameterError(f"profile must be a simple name (letters, digits, - or _), got {self.profile!r}")
        return self

    @classmethod
    def defaults(cls) -> dict:
        """{name: default} for every parameter."""
        return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict) -> RunParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"unknown run parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_name(self) -> str:
        parts = [self.loss, self.target_encoding]
        if self.arch != ARCH_2020:
            parts.append(self.arch + (f"{self.width}e{self.epochs}" if self.arch == "wbcnet" else ""))
        if self.view != "full":
            parts.append(self.view)
        if list(self.image_size) != list(NATIVE_SIZE):  # two sizes in one study (a pilot) never share a folder
            parts.append("x".join(str(v) for v in self.image_size))
        if self.folds:
            parts.append(f"cv{self.fold}of{self.folds}")
        if self.augment != "none":
            parts.append({"geometric": "aug", "geometric+color": "augc", "geometric+hed": "augh"}[self.augment])
        if self.lr_schedule != "constant":
            parts.append(self.lr_schedule)
        if self.label_smoothing:
            parts.append(f"ls{self.label_smoothing:g}")
        if self.tta:
            parts.append("tta")
        if self.input_scaling != "raw":
            parts.append(self.input_scaling)
        parts.append(f"lr{self.learning_rate:g}")
        if self.validation != TEST_AS_VALIDATION:
            parts.append({"grouped": "gval", "none": "noval"}[self.validation])
        parts.append(f"s{self.seed}")
        return "_".join(parts)

    def same_as(self, other: dict) -> bool:
        """True when ``other`` (a params.json) describes this run; keys it lacks take their defaults,
        so runs written before a parameter existed still match, and old values read as today's (:func:`upgrade`)."""
        defaults = self.defaults()
        return json.loads(json.dumps(self.to_dict())) == json.loads(json.dumps({**defaults, **upgrade(other)}))

    @property
    def legacy_run_name(self) -> str | None:
        """The folder name an earlier version gave this run, where it differs (integer labels were "paper")."""
        if self.target_encoding != INTEGER:
            return None
        return "_".join([self.loss, "paper", *self.run_name.split("_")[2:]])


@dataclasses.dataclass
class Profile:
    """A named study: which runs, and the settings they share."""

    name: str
    description: str
    #: what the profile is for (KINDS): decides how the report and the figures read its runs, never guessed
    kind: str
    image_size: list
    epochs: int
    seeds: list
    #: the losses of its main runs, by name (no default: a new loss joins a profile only where it is named), or
    #: ALL_LOSSES for every registered loss
    losses: tuple | str
    train_subset: int = 0
    batch_size: int = 32
    encodings: tuple = ENCODINGS
    validation: str = TEST_AS_VALIDATION
    arch: str = ARCH_2020
    input_scaling: str = "raw"
    learning_rate: float = 1e-3
    precision: str = "float32"
    rescore_split: str = "TEST"   # where the 2020 weights are re-scored (TEST_SIMPLE is quicker)
    #: control runs: each dict overrides the main settings and runs for every seed (or for its own "seeds")
    controls: tuple = ()
    #: more run parameters shared by the main runs (view, augment, ...: see RunParams)
    extra: dict = dataclasses.field(default_factory=dict)
    controls_first: bool = False   # run the controls before the main runs (a lab whose results pick the main)
    #: "seed": every setting's seed 0, then every setting's seed 1, ...: a study stopped part-way (a profile longer
    #: than a session) leaves the same seeds finished for every setting, so its comparisons stay paired
    order: str = "setting"
    #: the profile whose runs chose this one's size, epochs, rate and seeds (its report shows them)
    pilot: str = ""
    jobs: int = 1                  # notebooks run at once (2 suits many short runs on 2 cores)
    trades: str = ""
    #: a lab's search (:mod:`wbc_utils.lab`): "space" (design parameter -> its choices), "first" (candidates tried
    #: before the sampler's, as changes from the profile's design), "folds", "seed", "budget_minutes",
    #: "max_trials", "reduction" (the pruner's); its fold runs are the profile's control runs
    search: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        if isinstance(self.losses, str) and self.losses != ALL_LOSSES:
            raise ParameterError(f"profile {self.name!r}: losses must be a tuple of loss names or "
                                 f"{ALL_LOSSES!r} (every registered loss), got {self.losses!r}")
        if isinstance(self.losses, list):
            self.losses = tuple(self.losses)
        if not self.losses:
            raise ParameterError(f"profile {self.name!r} names no loss")

    @property
    def loss_names(self) -> tuple[str, ...]:
        """The losses of the main runs (ALL_LOSSES resolved against the registry now)."""
        return registry.names() if self.losses == ALL_LOSSES else tuple(self.losses)

    def _run(self, loss, encoding, seed, **over) -> RunParams:
        kw = dict(loss=loss, target_encoding=encoding, seed=seed, epochs=self.epochs, batch_size=self.batch_size,
                  image_size=list(self.image_size), train_subset=self.train_subset, validation=self.validation,
                  arch=self.arch, input_scaling=self.input_scaling, learning_rate=self.learning_rate,
                  precision=self.precision, profile=self.name)
        kw.update(self.extra)
        kw.update(over)
        return RunParams(**kw)

    def same_function(self, loss: str, encoding: str) -> bool:
        """True for a loss whose encodings coincide (``LossSpec.encodings_coincide``: cross-entropy, which reads the
        integer label as a class) under one-hot targets, when the profile also runs it with integer labels: the
        runs would repeat each other (``tests/test_losses.py`` checks the functions agree), so the study runs it
        once."""
        return (encoding != INTEGER and INTEGER in self.encodings and registry.get(loss).encodings_coincide
                and not self.extra.get("label_smoothing"))

    def main_runs(self) -> list[RunParams]:
        """The main runs: every loss x encoding x seed (a loss whose encodings coincide, once)."""
        return [self._run(l, e, s) for l in self.loss_names for e in self.encodings for s in self.seeds
                if not self.same_function(l, e)]

    def runs(self) -> list[RunParams]:
        """Every run, main and control, in the order the study trains them."""
        losses = self.loss_names
        main = self.main_runs()
        default_loss, default_enc = losses[0], self.encodings[0]
        # a control with "folds": k runs once per fold (k-fold validation over TRAIN's same-cell clusters)
        extra = [self._run(c.get("loss", default_loss), c.get("target_encoding", default_enc), s,
                           **{k: v for k, v in c.items() if k not in ("loss", "target_encoding", "seeds")},
                           **({"fold": f} if c.get("folds") else {}))
                 for c in self.controls for s in (parse_seeds(c["seeds"]) if "seeds" in c else self.seeds)
                 for f in range(int(c.get("folds") or 1))]
        out = extra + main if self.controls_first else main + extra
        if self.order == "seed":
            rank = {s: i for i, s in enumerate(self.seeds)}
            out.sort(key=lambda p: rank.get(p.seed, len(rank)))  # stable: settings keep their order within a seed
        return out

    def role_of(self, run_name: str) -> str:
        """'main' for one of the profile's main runs, 'control' for one of its control runs, 'other' for a run
        folder the profile does not plan (left by an older version of the profile, or by other settings): the
        tables leave it out instead of pooling it with the planned seeds."""
        if run_name in {p.run_name for p in self.main_runs()}:
            return "main"
        if self.search and re.search(rf"_cv\d+of{int(self.search.get('folds', 5))}_", run_name) \
                and "_gval_" in run_name:
            return "control"  # a fold of one of the lab's candidates (wbc_utils.lab)
        return "control" if run_name in {p.run_name for p in self.runs()} else "other"

    def is_main(self, params: dict) -> bool:
        """True for the profile's main runs (by the run's name)."""
        return self.role_of(RunParams.from_dict(params).run_name) == "main"

    def with_overrides(self, **kw) -> Profile:
        kw = {k: v for k, v in kw.items() if v is not None}
        if "seeds" in kw:
            kw["seeds"] = parse_seeds(kw["seeds"])
        if "losses" in kw:
            kw["losses"] = (ALL_LOSSES if kw["losses"] == ALL_LOSSES
                            else tuple(check_loss(v) for v in _listify(kw["losses"])))
        if "encodings" in kw:
            kw["encodings"] = tuple(check_encoding(v) for v in _listify(kw["encodings"]))
        if "losses" in kw or "encodings" in kw:
            # a control that names a loss or encoding left out by the override goes with it (a control that names
            # none takes the main runs' first); a profile may itself name controls outside its main runs (a pilot)
            losses = registry.names() if kw.get("losses") == ALL_LOSSES else kw.get("losses", self.loss_names)
            encodings = kw.get("encodings", self.encodings)
            kw["controls"] = tuple(c for c in self.controls
                                   if c.get("loss", losses[0]) in losses
                                   and c.get("target_encoding", encodings[0]) in encodings)
        out = dataclasses.replace(self, **kw)
        out.runs()  # validates every run's parameters now, before any work starts
        return out


def _listify(v) -> list:
    return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else list(v)


#: The loss study at a scale where the network learns (the reference profile); `quick` is it on two seeds.
_FULL = Profile(
    name="full", kind="study", losses=LOSSES_2020,
    description="the loss study at a scale where the 2020 network learns: all of TRAIN, TEST as validation as "
    "in 2020, every setting on the same twenty seeds, its scale chosen by the pilot on TRAIN alone",
    # seeds 0-9 by the pilot's rule; doubled to 0-19 once all 60 runs of 0-9 had finished (analysis.DESIGN_DECISIONS
    # says why), fixed before any run of 10-19 trained
    image_size=[60, 80], epochs=6, seeds=list(range(20)), train_subset=0, batch_size=32, learning_rate=3e-4,
    jobs=2, order="seed", pilot="pilot", rescore_split="TEST",
    controls=({"loss": "crossentropy", "target_encoding": INTEGER, "learning_rate": 1e-3},),
    trades="60x80 pixels instead of 240x320, 6 of 100 epochs and Adam's rate 0.0003 (the 2020 rate 0.001 kept "
           "as a control on the same seeds), each chosen by the pilot's rule on held-out TRAIN cells (see Methods); "
           "twenty seeds per setting, every setting on the same seeds; cross-entropy run once (its two encodings "
           "are the same function)")


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", kind="study", description="the whole pipeline on a few images, to check it works",
        # every registered loss, a loss of your own included (WBC_LOSS_PLUGINS): the pipeline is checked for each
        losses=ALL_LOSSES,
        image_size=[48, 64], epochs=2, seeds=[0], train_subset=256, batch_size=32, rescore_split="TEST_SIMPLE",
        learning_rate=3e-4, jobs=2,
        controls=({"loss": "crossentropy", "target_encoding": INTEGER, "learning_rate": 1e-3},),
        trades="256 training images, 2 epochs, 48x64 pixels, one seed: numbers are meaningless; "
               "the 2020 weights are re-scored on TEST_SIMPLE's 71 images only"),
    # the full profile on its first two seeds: every quick run is the full run of the same seed but for the
    # profile's name (tests/test_params.py::test_the_quick_profile_is_the_full_profile_on_two_seeds)
    "quick": dataclasses.replace(
        _FULL, name="quick", seeds=[0, 1], rescore_split="TEST_SIMPLE",
        description="the full profile on its first two seeds, in under 30 minutes on a 2-core CPU: the network "
        "learns, but two seeds answer a comparison only where they agree closely",
        trades="the full profile's scale (60x80 pixels instead of 240x320, 6 of 100 epochs, Adam's rate 0.0003 "
               "with the 2020 rate 0.001 as a control on the same seeds; all of TRAIN), chosen by the pilot on "
               "held-out TRAIN cells, on two of its twenty seeds: one degree of freedom for the seeds' part, so a "
               "comparison is resolved or bounded only where the two seeds agree closely and the full profile "
               "answers the question; the 2020 weights are re-scored on TEST_SIMPLE's 71 images only"),
    "full": _FULL,
    "collapse": Profile(
        name="collapse", kind="collapse",
        description="the collapse study: cross-entropy with integer labels, the 2020 recipe against one change at a "
        "time, on the same seeds",
        image_size=[60, 80], epochs=6, seeds=[0, 1, 2, 3, 4], train_subset=2000, batch_size=32, learning_rate=1e-3,
        losses=("crossentropy",), encodings=(INTEGER,), rescore_split="TEST_SIMPLE", jobs=2,
        controls=({"learning_rate": 3e-4}, {"input_scaling": "unit"}, {"arch": "he"}, {"arch": "bn"}),
        trades="60x80 pixels, 2,000 TRAIN images, 6 epochs (at 3, runs that learn slowly could not yet be told from "
               "runs held at ln 4): enough to see a run stay at ln 4 or leave it"),
    "pilot": Profile(
        name="pilot", kind="pilot",
        description="the pilot that chose the full profile's size, epochs and rate, on TRAIN alone (a fifth of "
        "TRAIN's same-cell clusters held out per seed; TEST is scored at the end but chooses nothing)",
        image_size=[60, 80], epochs=15, seeds=[0, 1, 2], train_subset=0, batch_size=32, learning_rate=3e-4,
        losses=("crossentropy",), encodings=(INTEGER,), validation="grouped", rescore_split="TEST_SIMPLE", jobs=2,
        # the candidates, each on the same three seeds (so the same held-out cells): the 2020 rate, twice the
        # resolution, and MSE with one-hot targets (its paired difference with cross-entropy sizes the full profile)
        controls=({"learning_rate": 1e-3}, {"image_size": [120, 160]},
                  {"loss": "mse", "target_encoding": ONEHOT}),
        trades="all of TRAIN but a held-out fifth of its cells, 15 epochs (the validation curve per epoch shows "
               "where each candidate's plateau starts), three seeds per candidate"),
    "best": Profile(
        name="best", kind="lab",
        description="beyond the paper: a from-scratch model whose design was chosen by 5-fold validation over "
        "TRAIN's same-cell clusters (the lab), then trained on all of TRAIN with three seeds",
        image_size=[64, 64], epochs=10, seeds=[0, 1, 2], train_subset=0, batch_size=32, learning_rate=1e-3,
        losses=("crossentropy",), encodings=(ONEHOT,), validation="none", arch="wbcnet", input_scaling="unit",
        rescore_split="TEST_SIMPLE", jobs=2, controls_first=True,
        # The kept design, by the rule fixed before the lab ran (beyond.choose_design): the candidate with the
        # highest mean validation accuracy over the 5 folds; candidates whose fold ranges overlap it are reported
        # as tied with it (the lab cannot rank them). The final runs train on all of TRAIN, the 6 cells TRAIN
        # shares with TEST included (the headline leaves those cells out of TEST instead).
        extra={"view": "cell", "augment": "geometric+color", "lr_schedule": "cosine", "label_smoothing": 0.1,
               "tta": False},
        # the lab (wbc_utils.lab): candidates scored by 5-fold validation over TRAIN's same-cell clusters (seed 0,
        # the same folds for all), the listed ones first (this design and one change at a time from it), then
        # those Optuna's sampler proposes; successive halving over folds stops the ones that trail
        search={"folds": 5, "seed": 0, "budget_minutes": 120, "max_trials": 24, "reduction": 2, "startup": 4,
                "space": {"view": ["cell", "cell-reflect", "cell-black", "cell160-reflect"],
                          "augment": ["geometric+color", "geometric+hed"],
                          "epochs": [10, 16],
                          "label_smoothing": [0.0, 0.1],
                          "image_size": [[64, 64], [96, 96]]},
                "first": [{}, {"view": "cell-reflect"}, {"augment": "geometric+hed"},
                          {"view": "cell-reflect", "augment": "geometric+hed"}, {"epochs": 16},
                          {"view": "cell160-reflect"}]},
        trades="crops around the white cell; the lab's candidates are one seed each, up to five folds each (the "
               "pruner stops the trailing ones after one, two or four), within a wall-clock budget"),
    "paper": Profile(
        name="paper", kind="study",
        description="the faithful reproduction: 240x320, 100 epochs, all of TRAIN, Adam at 0.001",
        losses=LOSSES_2020,
        image_size=[240, 320], epochs=100, seeds=[0, 1, 2], train_subset=0, batch_size=32, learning_rate=1e-3,
        jobs=1, precision="auto",
        trades="nothing but the precision: the 2020 set-up, three seeds (cross-entropy once: its two encodings are "
               "the same function); mixed precision where the hardware computes it natively (float32 output layer). "
               "3 to 11 hours per run on a 2-core CPU (25-90 images/s measured), 15 runs: use a GPU "
               "(make setup GPU=1) or a cluster (study --scheduler)"),
}


#: The parameters that make a design (what a lab compares), as opposed to the seed, fold or validation of a run.
DESIGN_PARAMS = ("view", "image_size", "augment", "lr_schedule", "label_smoothing", "arch", "width", "epochs",
                 "learning_rate", "tta")


def design_key(params: dict) -> tuple:
    """What makes two runs the same design: equal for a lab candidate's folds and the final runs that use it."""
    return tuple((k, json.dumps(params.get(k), sort_keys=True)) for k in DESIGN_PARAMS)


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ParameterError(f"profile={name!r} is not known; valid values: {', '.join(PROFILES)}")
    return PROFILES[name]
