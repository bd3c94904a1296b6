import pytest
import torch
from torch import nn

from odconv_surgery import ODConv2d, TemperatureSchedule, apply_odconv, get_temperature, set_temperature


def test_schedule_is_linear_then_flat():
    s = TemperatureSchedule(anneal_steps=10)
    assert s.value(0) == 30 and s.value(5) == pytest.approx(15.5) and s.value(10) == 1 and s.value(100) == 1


def test_step_sets_every_layer_and_temperature_changes_output():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3))
    model, _ = apply_odconv(model, init="scratch")
    model.eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        y1 = model(x)
        schedule = TemperatureSchedule(anneal_steps=4)
        assert schedule.step(model) == 30
        assert get_temperature(model) == 30
        y30 = model(x)
    assert not torch.allclose(y1, y30)
    assert all(m.attention.temperature == 30 for m in model.modules() if isinstance(m, ODConv2d))
    assert set_temperature(model, 1.0) == 2
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        set_temperature(model, 0)
