"""A look inside a trained model: Grad-CAM maps, first-layer filters, activations, and its worst errors.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last
convolutional block by the mean gradient of a class score with respect to it;
the ReLU of the weighted sum, upsampled to the input, shows *where* the
evidence for that class lies. It answers the teaching question directly: does
the network look at the nucleus, or at red cells and background?

Everything here works on a finished run (``runs/<profile>/<run>/``) or on a
shipped model (``models/best/``): :func:`~wbc_utils.runs.load_model` returns the model with the
parameters that say how its inputs were prepared.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import CLASSES
from .evaluation import SCORE_COLUMNS, softmax
from .predict import predict_arrays
from .runs import LoadedModel, load_model, predictions_frame

__all__ = ["LoadedModel", "load_model", "grad_cam", "first_layer_filters", "activations", "confidently_wrong",
           "examples_per_class", "score_split"]


def last_conv_layer(model) -> str:
    """Name of the layer whose output Grad-CAM uses: the last convolution's activation."""
    import keras

    names = [l.name for l in model.layers]
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name} has no convolution layer")
    last = convs[-1].name
    # with BatchNorm the activation is a separate ReLU after the conv: prefer it
    after = names[names.index(last) + 1:]
    for n in after[:2]:
        if n.startswith("relu"):
            return n
    return last


def grad_cam(model, images: np.ndarray, class_index=None, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps for a uint8 batch: (maps (N, H, W) in [0, 1] at the input size, scores (N, 4)).

    ``class_index`` (int or one per image) picks the class explained; by default the predicted one.
    """
    import keras  # TensorFlow only when a model is explained
    import tensorflow as tf

    layer = layer or last_conv_layer(model)
    sub = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    x = tf.convert_to_tensor(np.asarray(images, np.uint8))
    with tf.GradientTape() as tape:
        act, scores = sub([x], training=False)
        tape.watch(act)
        scores = tf.cast(scores, tf.float32)
        if class_index is None:
            idx = tf.argmax(scores, axis=1, output_type=tf.int32)
        else:
            idx = tf.constant(np.broadcast_to(np.asarray(class_index, np.int32), (len(images),)))
        chosen = tf.gather(scores, idx, axis=1, batch_dims=1)
    grads = tape.gradient(chosen, act)
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(act, tf.float32), axis=-1))
    cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0].numpy()
    top = cam.reshape(len(cam), -1).max(1)
    cam = cam / np.where(top > 0, top, 1.0)[:, None, None]
    return cam.astype(np.float32), scores.numpy()


def first_layer_filters(model) -> np.ndarray:
    """The first convolution's kernels as (n_filters, 3, 3, 3) RGB, scaled to [0, 1] each."""
    import keras

    conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
    k = np.asarray(conv.get_weights()[0], np.float32)  # (kh, kw, in, out)
    k = np.transpose(k, (3, 0, 1, 2))
    lo = k.reshape(len(k), -1).min(1)[:, None, None, None]
    hi = k.reshape(len(k), -1).max(1)[:, None, None, None]
    return (k - lo) / np.where(hi > lo, hi - lo, 1.0)


def activations(model, image: np.ndarray, max_layers: int = 4) -> list[tuple[str, np.ndarray]]:
    """Outputs of the first ``max_layers`` convolution blocks for one uint8 image: [(layer, (H, W, C))]."""
    import keras

    convs = [l.name for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    names = [l.name for l in model.layers]
    picks = []
    for c in convs[1::2][:max_layers]:  # the second conv of each block (after its activation, when separate)
        after = names[names.index(c) + 1:names.index(c) + 3]
        picks.append(next((n for n in after if n.startswith("relu")), c))
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in picks])
    outs = sub([np.asarray(image, np.uint8)[None]], training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return [(n, np.asarray(o[0], np.float32)) for n, o in zip(picks, outs)]


def confidently_wrong(predictions, k: int = 12, split: str = "TEST", one_per_cell: bool = True):
    """The ``k`` most confidently wrong images of a run's predictions.csv (a DataFrame), most confident first.

    Confidence is the softmax probability of the predicted class. With
    ``one_per_cell``, a source cell appears once (its worst copy): otherwise one
    misread cell fills the gallery with its augmented copies.
    """
    p = predictions[predictions["split"] == split].copy()
    prob = softmax(p[SCORE_COLUMNS].to_numpy(float))
    p["confidence"] = prob.max(1)
    p["predicted"] = [CLASSES[i] for i in prob.argmax(1)]
    wrong = p[p["predicted"] != p["class"]].sort_values("confidence", ascending=False)
    if one_per_cell:
        wrong = wrong.drop_duplicates("cell")
    return pd.DataFrame(wrong.head(k)).reset_index(drop=True)


def examples_per_class(predictions, split: str = "TEST", seed: int = 0):
    """For each class: one correctly and one wrongly classified image (when any), as predictions.csv rows."""
    p = predictions[predictions["split"] == split]
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(CLASSES):
        mine = p[p["class"] == name]
        for ok in (True, False):
            pick = mine[(mine["pred"] == c) == ok]
            if len(pick):
                r = pick.iloc[int(rng.integers(len(pick)))].to_dict()
                r["correct"] = ok
                rows.append(r)
    return pd.DataFrame(rows)


def score_split(run, split_data):
    """A predictions.csv-like DataFrame for a decoded split, scored now (for shipped models, which have none)."""
    probs = predict_arrays(run, np.asarray(split_data.images))
    return predictions_frame(split_data.frame, np.log(np.maximum(probs, 1e-12))).reset_index(drop=True)
