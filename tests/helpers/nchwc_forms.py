"""Force every NCHWc form planner to one form, so tests can check each form the planner could pick."""

from __future__ import annotations

import pytest

from odconv_surgery.passes.onnx.lowering.plan import Planner


def force_nchwc_form(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """Every ``Planner`` made while ``monkeypatch`` is active forces ``form`` (on the layers it is a candidate for;
    the others keep the cost model's form)."""
    real_init = Planner.__init__

    def forced(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.force = form

    monkeypatch.setattr(Planner, "__init__", forced)
