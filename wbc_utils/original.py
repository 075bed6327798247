"""The 2020 report's own artifacts: its trained weights and its training logs.

The original repository (github.com/tapphughesn/COMP562FinalProject) saved, per
loss, a TF object-based checkpoint of a Keras ``Sequential`` model (variables
``layer-<i>/kernel`` and ``layer-<i>/bias``; note the MSE and cross-entropy
files are spelled ``.cpkt``) after the last of 100 epochs, and a Keras log per
loss. Point :func:`find_original` at a copy of that repository's folder (one
holding ``checkpoints/`` and ``logfiles/``): by default ``WBC_ORIGINAL_DIR``, else
``../shared/seed/original-2020`` beside the project.

The models took raw 0-255 pixels at 240x320.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .config import original_dir as default_original_dir
from .evaluation import evaluate_predictions
from .model import build_model
from .params import ARCH_2020
from .registry import INTEGER, losses_2020
from .runs import predictions_frame
from .tfenv import import_tf
from .training import predict_scores

LOG_LINE = re.compile(r"- loss: (?P<loss>[\d.e+-]+) - accuracy: (?P<accuracy>[\d.e+-]+) - "
                      r"val_loss: (?P<val_loss>[\d.e+-]+) - val_accuracy: (?P<val_accuracy>[\d.e+-]+)")


def find_original(root: str | os.PathLike | None = None) -> dict:
    """{loss: {"checkpoint": prefix or None, "log": path or None}} for each of the 2020 losses (files named by
    ``LossSpec.name_2020``), whatever is present."""
    root = Path(root) if root else default_original_dir()
    out = {}
    for spec in losses_2020():
        loss, name = spec.name, spec.name_2020
        ck = None
        for ext in ("ckpt", "cpkt"):
            prefix = root / "checkpoints" / f"{name}.{ext}"
            if Path(f"{prefix}.index").exists():
                ck = prefix
        log = root / "logfiles" / f"{name}.log"
        out[loss] = {"checkpoint": ck, "log": log if log.exists() else None}
    return out


def parse_log(path: str | os.PathLike):
    """Per-epoch loss/accuracy/val_loss/val_accuracy from a Keras (TF 2.1) training log, as a DataFrame."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if "ETA" in line:
            continue
        m = LOG_LINE.search(line)
        if m:
            rows.append({k: float(v) for k, v in m.groupdict().items()})
    if not rows:
        raise ValueError(f"{path}: no epoch summary lines (loss/accuracy/val_loss/val_accuracy) found")
    frame = pd.DataFrame(rows)
    frame.insert(0, "epoch", range(1, len(frame) + 1))
    return frame


def load_original_model(checkpoint: str | os.PathLike, input_scaling: str = "raw"):
    """The paper model (240x320) with the 2020 weights from a TF checkpoint prefix.

    ``input_scaling="unit"`` feeds the same weights pixels divided by 255: the 2020 text says its images
    were normalised, and this is how to test that claim against its logged accuracy.
    """
    tf = import_tf()
    prefix = str(checkpoint)
    if prefix.endswith(".index"):
        prefix = prefix[: -len(".index")]
    if not Path(prefix + ".index").exists():
        raise FileNotFoundError(f"no TensorFlow checkpoint at {prefix} (expected {prefix}.index and its data files)")
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    idx = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"layer-(\d+)/kernel/", k))})
    model = build_model((240, 320), arch=ARCH_2020, input_scaling=input_scaling, name="original_2020")
    targets = [l for l in model.layers if getattr(l, "kernel", None) is not None]
    if len(idx) != len(targets):
        raise ValueError(f"{prefix}: {len(idx)} layers with kernels, the paper model has {len(targets)}")
    for i, layer in zip(idx, targets):
        k = reader.get_tensor(f"layer-{i}/kernel/.ATTRIBUTES/VARIABLE_VALUE")
        b = reader.get_tensor(f"layer-{i}/bias/.ATTRIBUTES/VARIABLE_VALUE")
        if tuple(k.shape) != tuple(layer.kernel.shape):
            raise ValueError(f"{prefix}: layer-{i} kernel {k.shape} does not fit {layer.name} {layer.kernel.shape}")
        layer.set_weights([k, b])
    return model


def rescore(loss: str, checkpoint, test, test_simple=None, batch_size: int = 32, log=None,
            train_class_counts=None) -> dict:
    """Evaluate one 2020 model with this project's metrics. ``test`` is a SplitData at 240x320.

    ``log`` (its parsed training log) supplies the final training loss for the collapse verdict. For
    cross-entropy the weights are also scored on pixels scaled to 0-1 (``test_accuracy_unit_inputs``), the
    evidence for whether the 2020 code normalised its images as its text says.
    """
    model = load_original_model(checkpoint)
    scores = predict_scores(model, test, batch_size)
    test_pred = predictions_frame(test.frame, scores)
    simple_pred = predictions_frame(test_simple.frame, predict_scores(model, test_simple, batch_size)) \
        if test_simple is not None else None
    final_loss = float(log["loss"].iloc[-1]) if log is not None and len(log) else None
    out = evaluate_predictions(test_pred, simple_pred, loss=loss, encoding=INTEGER, regression=True,
                               final_train_loss=final_loss, train_class_counts=train_class_counts)
    out["loss"] = loss
    out["checkpoint"] = str(checkpoint)
    out["split"] = test.split
    out["score_mean"] = np.asarray(scores).mean(0).tolist()
    out["score_spread_within_image"] = float(np.asarray(scores).std(1).mean())
    if loss == "crossentropy":
        unit = predict_scores(load_original_model(checkpoint, input_scaling="unit"), test, batch_size)
        out["test_accuracy_unit_inputs"] = float((np.asarray(unit).argmax(1) == test.labels).mean())
    return out
