"""The paper's model: exact parameter count, configurable size, uint8 input, variants."""
from __future__ import annotations

import numpy as np
import pytest

from wbc_utils.errors import ParameterError
from wbc_utils.model import build_model, paper_param_count


def test_paper_parameter_count_is_150012():
    model = build_model((240, 320))
    assert model.count_params() == 150_012 == paper_param_count(240, 320)
    convs = [l for l in model.layers if l.__class__.__name__ == "Conv2D"]
    pools = [l for l in model.layers if l.__class__.__name__ == "MaxPooling2D"]
    assert len(convs) == 8 and len(pools) == 4
    assert model.get_layer("logits").count_params() == 76_804


@pytest.mark.parametrize("size", [(48, 64), (60, 80), (120, 160)])
def test_count_follows_input_size(size):
    assert build_model(size).count_params() == paper_param_count(*size) < 150_012


def test_takes_uint8_and_returns_4_float32_scores():
    model = build_model((48, 64), input_scaling="unit")
    x = np.random.default_rng(0).integers(0, 255, (3, 48, 64, 3), dtype=np.uint8)
    out = model(x)
    assert out.shape == (3, 4) and out.dtype.name == "float32"


def test_variants_and_bad_values():
    assert build_model((48, 64), arch="he").count_params() == paper_param_count(48, 64)
    assert build_model((48, 64), arch="bn").count_params() > paper_param_count(48, 64)
    with pytest.raises(ParameterError, match="arch='resnet'.*unet_encoder, he, bn"):
        build_model((48, 64), arch="resnet")
    with pytest.raises(ParameterError, match="16 pixels"):
        build_model((8, 64))
