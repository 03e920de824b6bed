"""pytest plugin for gpu_check.sh: caps hypothesis's examples per test at ``TRITONNET_MAX_EXAMPLES``, on top of
the profile tests/conftest.py loaded (``TRITONNET_HYPOTHESIS_PROFILE=thorough`` on a GPU), so the thorough run fits
a fixed time box. Tests that ask for fewer examples keep their number.

    TRITONNET_HYPOTHESIS_PROFILE=thorough TRITONNET_MAX_EXAMPLES=40 python -m pytest -p benchmarks.hypothesis_budget
"""

import os

import pytest


@pytest.hookimpl(trylast=True)  # after conftest.py has loaded its profile, before any test module is imported
def pytest_configure(config):
    cap = int(os.environ.get("TRITONNET_MAX_EXAMPLES", "0") or 0)
    if cap <= 0:
        return
    from hypothesis import settings

    current = settings.default
    settings.register_profile("gpu-check-budget", settings(current, max_examples=min(cap, current.max_examples)))
    settings.load_profile("gpu-check-budget")
