import os
from pathlib import Path

import pytest
import torch

# Exports in tests choose their NCHWc forms by the cost model (reproducible, nothing timed, no cache written);
# tests/test_plan.py tunes on purpose.
os.environ.setdefault("ODCONV_TUNE", "0")
os.environ.setdefault("ODCONV_TUNING_CACHE", "off")

# Test tensors are tiny: one intra-op thread is as fast, and it avoids OpenMP spin-wait collapse when the
# machine is shared (measured: one model test 123 s with 2 threads on a loaded 2-core box, 15 s with 1).
torch.set_num_threads(1)

#: Set by ``make test`` to the folder the wheel was installed into: the run refuses to test any other copy.
INSTALLED_ENV = "ODCONV_TEST_INSTALLED"


def pytest_configure(config: pytest.Config) -> None:
    expected = os.environ.get(INSTALLED_ENV)
    if expected:
        import odconv_surgery

        where = Path(odconv_surgery.__file__).resolve()
        if not where.is_relative_to(Path(expected).resolve()):
            raise pytest.UsageError(
                f"{INSTALLED_ENV}={expected} but odconv_surgery was imported from {where.parent}: the source tree "
                "shadows the installed wheel (run pytest through the venv's pytest script, not `python -m pytest` "
                "from the repository root)"
            )


def pytest_report_header(config: pytest.Config) -> str:
    import odconv_surgery

    return f"odconv_surgery imported from {Path(odconv_surgery.__file__).parent}"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
