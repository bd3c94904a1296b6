"""Route onnx-graphsurgeon's console messages to Python logging, so a clean export prints nothing.

onnx-graphsurgeon prints its warnings to stdout (e.g. "Found distinct tensors that share the same name", once per
shared initializer the TorchScript exporter deduplicated). Inside ``graphsurgeon_to_logging()`` messages below
ERROR go to the ``odconv_surgery.onnx`` logger at DEBUG (``logging.getLogger("odconv_surgery.onnx")
.setLevel(logging.DEBUG)`` shows them); errors keep onnx-graphsurgeon's own handling.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from onnx_graphsurgeon.logger import G_LOGGER
from onnx_graphsurgeon.logger.logger import LogMode

LOGGER = logging.getLogger("odconv_surgery.onnx")


@contextlib.contextmanager
def graphsurgeon_to_logging() -> Iterator[None]:
    """Within the block, onnx-graphsurgeon messages below ERROR are logged at DEBUG instead of printed."""
    original = G_LOGGER.__dict__.get("log")
    print_log = G_LOGGER.log

    def log(message, severity, mode=LogMode.EACH, stack_depth=2):  # onnx-graphsurgeon's Logger.log signature
        if severity >= G_LOGGER.ERROR:
            print_log(message, severity, mode=mode, stack_depth=stack_depth + 1)
        elif LOGGER.isEnabledFor(logging.DEBUG):
            LOGGER.debug("onnx-graphsurgeon: %s", message() if callable(message) else message)

    G_LOGGER.log = log
    try:
        yield
    finally:
        if original is None:
            del G_LOGGER.log
        else:
            G_LOGGER.log = original
