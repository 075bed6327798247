"""Evidence for the collapse study: dead ReLUs, gradient sizes and output spread.

Measured on a fixed, class-balanced probe batch of TRAIN images, at
initialisation and after the first epoch, and written to ``diagnostics.json``:

* ``zero_fraction[layer]``: share of a convolution's ReLU outputs that are 0;
* ``dead_channels[layer]``: share of its channels that are 0 for every probe image;
* ``grad_norm[layer]``: L2 norm of the loss gradient w.r.t. its kernel;
* ``logit_std``: spread of the 4 outputs across probe images (0 = constant output).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifacts import read_json, write_json
from .model import conv_layers


def activation_stats(model, images) -> dict:
    import keras  # TensorFlow: only called while a model trains

    convs = conv_layers(model)
    # the ReLU output of each conv: the conv itself (fused activation) or its BN->ReLU follower
    outs = []
    for c in convs:
        name = c.name.replace("conv", "relu")
        try:
            outs.append(model.get_layer(name).output)
        except ValueError:
            outs.append(c.output)
    probe = keras.Model(model.input, outs + [model.output])
    acts = probe(images, training=False)
    res = {"zero_fraction": {}, "dead_channels": {}}
    for c, a in zip(convs, acts[:-1]):
        a = np.asarray(a, np.float32)
        res["zero_fraction"][c.name] = float((a <= 0).mean())
        res["dead_channels"][c.name] = float((a.reshape(-1, a.shape[-1]) <= 0).all(0).mean())
    logits = np.asarray(acts[-1], np.float32)
    res["logit_std"] = float(logits.std(0).mean())
    res["pred_share_top"] = float(np.bincount(logits.argmax(1), minlength=4).max() / len(logits))
    return res


def gradient_stats(model, images, labels, loss_fn) -> dict:
    import tensorflow as tf  # only called while a model trains

    x = tf.convert_to_tensor(images)
    y = tf.convert_to_tensor(labels)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_fn(y, model(x, training=False)))
    kernels = [l.kernel for l in conv_layers(model)] + [model.get_layer("logits").kernel]
    grads = tape.gradient(loss, kernels)
    names = [l.name for l in conv_layers(model)] + ["logits"]
    norms = {n: (float(tf.norm(g)) if g is not None else 0.0) for n, g in zip(names, grads)}
    total = float(np.sqrt(sum(v * v for v in norms.values())))
    return {"loss": float(loss), "grad_norm": norms, "grad_norm_total": total}


class Diagnostics:
    """Callable that records a snapshot under a name into ``diagnostics.json``."""

    def __init__(self, path: Path, model, params, images, labels):
        self.path, self.model, self.params, self.images, self.labels = Path(path), model, params, images, labels

    def __call__(self, when: str) -> dict:
        from .losses import make_loss  # imports TensorFlow

        snap = activation_stats(self.model, self.images)
        snap.update(gradient_stats(self.model, self.images, self.labels,
                                   make_loss(self.params.loss, self.params.target_encoding).call))
        data = read_json(self.path) if self.path.exists() else {}
        data[when] = snap
        write_json(self.path, data)
        return snap
