"""Hypothesis profiles: "ci" (the default: deterministic, bounded, fast in the interpreter) and "thorough" (more
and larger examples, for a GPU). Choose with TRITONNET_HYPOTHESIS_PROFILE=thorough."""

import os

from hypothesis import HealthCheck, settings

import tritonnet  # noqa: F401  (decides interpreter mode before any test imports kernels)

settings.register_profile(
    "ci",
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("TRITONNET_HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gpu_compile_report():
    """Every surviving config of every distinct launch of the recorded training steps (benchmarks.step_launches.STEPS),
    compiled for sm_80 and sm_90 (once per session, in a subprocess with TRITON_INTERPRET=0): the rows of
    ``tritonnet.kernels.gpu_compile.compile_recorded``."""
    from benchmarks.step_launches import compile_steps_in_subprocess

    return compile_steps_in_subprocess()
