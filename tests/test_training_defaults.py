"""One default attention learning-rate scale (0.1, measured in issue 20) for every way of training."""

from __future__ import annotations

import inspect

from odconv_surgery import TrainConfig, param_groups
from odconv_surgery.nn.optim import ATTENTION_LR_SCALE


def test_train_config_and_param_groups_share_the_attention_lr_scale():
    assert ATTENTION_LR_SCALE == 0.1
    assert inspect.signature(param_groups).parameters["attention_lr_scale"].default == ATTENTION_LR_SCALE
    assert TrainConfig().attention_lr_scale == ATTENTION_LR_SCALE
