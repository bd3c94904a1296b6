"""The ODConv layer (torch only): ``ODConv2d``, its attention ``ODAttention`` and the softmax temperature."""

from .attention import BatchOneBatchNormError, ODAttention
from .odconv import ODConv2d
from .optim import param_groups
from .options import LayerOptions
from .temperature import TemperatureSchedule, get_temperature, set_temperature

__all__ = ["BatchOneBatchNormError", "ODAttention", "LayerOptions", "ODConv2d", "TemperatureSchedule", "get_temperature", "param_groups", "set_temperature"]
