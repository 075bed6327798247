"""The paper's model: the encoder half of a U-Net, 8 convolutions, 4 max-pools, Dense(4).

At 240x320x3 it has exactly 150,012 parameters (the 2020 report's figure):
the convolutions hold 73,208 and the Dense layer 19,200*4 + 4 = 76,804. The Dense
layer's size follows the input size, so the count does too.

The model takes uint8 images and casts (and optionally scales) them inside,
so data stays uint8 in memory and on disk. Variants for the collapse study:

* ``arch="unet_encoder"``: as in 2020 (Glorot-uniform init, no normalisation);
* ``arch="he"``: the same layers with He-normal initialisation;
* ``arch="bn"``: BatchNorm after every convolution (a few hundred more parameters).

And one model that is not the paper's, for the study's "beyond the paper" part:

* ``arch="wbcnet"``: four blocks of two 3x3 convolutions with BatchNorm and
  ReLU (``width``, 2x, 4x, 8x filters), max-pools between blocks, global
  average pooling, dropout 0.3 and Dense(4). Global pooling makes it
  independent of where the cell sits and keeps it small (about 295,000
  parameters at width 16, 1.2 MB), whatever the input size.

``input_scaling="raw"`` feeds 0-255 pixels as the original code did;
``"unit"`` divides by 255 first.
"""
from __future__ import annotations

from collections.abc import Sequence

from .params import ARCH_2020, ARCHS, INPUT_SCALINGS, LEGACY_VALUES, check_choice, check_image_size
from .tfenv import import_tf

#: (filters of the first conv, filters of the second conv) per block.
BLOCKS = ((4, 8), (16, 16), (32, 32), (64, 64))
NUM_CLASSES = 4


def paper_param_count(height: int, width: int) -> int:
    """The parameter count of the paper model at this input size, computed by hand."""
    conv, c_in = 0, 3
    for a, b in BLOCKS:
        conv += 9 * c_in * a + a + 9 * a * b + b
        c_in = b
    h, w = height, width
    for _ in BLOCKS:
        h, w = h // 2, w // 2
    return conv + h * w * c_in * NUM_CLASSES + NUM_CLASSES


def build_model(image_size: Sequence[int] = (240, 320), arch: str = ARCH_2020, input_scaling: str = "raw",
                name: str | None = None, width: int = 16):
    """Build the (uncompiled) Keras model. Its output is 4 raw scores (logits), float32."""
    arch = check_choice("arch", LEGACY_VALUES["arch"].get(arch, arch), ARCHS)
    check_choice("input_scaling", input_scaling, INPUT_SCALINGS)
    h, w = check_image_size(image_size)
    import_tf()
    import keras
    from keras import layers

    init = "he_normal" if arch == "he" else "glorot_uniform"
    inp = keras.Input((h, w, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0 if input_scaling == "unit" else 1.0, name="scale")(inp)
    if arch == "wbcnet":
        return _wbcnet(inp, x, int(width), name or f"wbcnet{width}")
    for i, (a, b) in enumerate(BLOCKS):
        for j, f in enumerate((a, b)):
            cname = f"conv{i + 1}_{j + 1}"
            if arch == "bn":
                x = layers.Conv2D(f, 3, padding="same", kernel_initializer="he_normal", name=cname)(x)
                x = layers.BatchNormalization(name=f"bn{i + 1}_{j + 1}")(x)
                x = layers.ReLU(name=f"relu{i + 1}_{j + 1}")(x)
            else:
                x = layers.Conv2D(f, 3, padding="same", activation="relu", kernel_initializer=init, name=cname)(x)
        x = layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(NUM_CLASSES, dtype="float32", name="logits")(x)
    return keras.Model(inp, out, name=name or f"wbc_encoder_{arch}")


def _wbcnet(inp, x, width: int, name: str):
    import keras
    from keras import layers

    for i, mult in enumerate((1, 2, 4, 8)):
        for j in range(2):
            x = layers.Conv2D(width * mult, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                              name=f"conv{i + 1}_{j + 1}")(x)
            x = layers.BatchNormalization(name=f"bn{i + 1}_{j + 1}")(x)
            x = layers.ReLU(name=f"relu{i + 1}_{j + 1}")(x)
        if i < 3:
            x = layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    out = layers.Dense(NUM_CLASSES, dtype="float32", name="logits")(x)
    return keras.Model(inp, out, name=name)


def conv_layers(model) -> list:
    """The model's convolution layers, in order."""
    import keras

    return [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
