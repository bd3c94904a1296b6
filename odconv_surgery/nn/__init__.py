"""The ODConv layer (torch only): ``ODConv2d``, its attention ``ODAttention``, the softmax temperature, and
``ODLinear`` (a Linear computed by a 1x1 ``ODConv2d``)."""

from .attention import BatchOneBatchNormError, ODAttention
from .linear import ODLinear
from .odconv import ODConv2d
from .optim import param_groups
from .options import LayerOptions
from .temperature import TemperatureSchedule, get_temperature, set_temperature

__all__ = ["BatchOneBatchNormError", "ODAttention", "LayerOptions", "ODConv2d", "ODLinear", "TemperatureSchedule", "get_temperature", "param_groups", "set_temperature"]
