"""The launch recorder sees every launch of a training step as a GPU would make it: Triton's specialization of each
argument, the autotune configs that survive pruning on the architecture, and the grid; and the autotune policy in
tritonnet.kernels.runtime prunes configs one block of the architecture cannot hold and never times a lone survivor."""

from __future__ import annotations

import pytest
import torch
import triton
from hypothesis import given
from hypothesis import strategies as st
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend

from tritonnet.kernels import runtime
from tritonnet.kernels.launches import Config, Launch, LaunchRecorder, distinct, specialize
from tests.recorded import gpu_check_stages

# One worker records the GPU check's stages for these modules (pytest -n): tests/recorded.py caches them.
pytestmark = pytest.mark.xdist_group("recorded")

@pytest.fixture(scope="module")
def step_launches() -> list[Launch]:
    """One alexnet training step, bf16, channels-last, batch 128, as an H200 would launch it."""
    return gpu_check_stages()["training"]


@given(st.one_of(st.integers(-2**40, 2**40), st.sampled_from([1, 16, 729, 1000, 3025, 2**31 - 16, 2**31])))
def test_integer_specialization_matches_triton(value):
    kind, divisible, constant = specialize(value)
    expected_kind, attribute = native_specialize_impl(BaseBackend, value, False, True, True)
    assert kind == expected_kind
    if value == 1:
        assert (kind, constant) == ("constexpr", 1)
    else:
        assert divisible == (value % 16 == 0) and constant == value


@given(st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.int64]), st.integers(0, 40))
def test_pointer_alignment_is_the_storage_offset_in_bytes(dtype, offset):
    tensor = torch.empty(64, dtype=dtype, device="meta")[offset:]
    kind, divisible, _ = specialize(tensor)
    expected_kind, _ = native_specialize_impl(BaseBackend, torch.empty(1, dtype=dtype), False, True, True)
    assert kind == expected_kind
    assert divisible == ((offset * tensor.element_size()) % 16 == 0)


def test_recording_refuses_the_interpreter():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=0"):
        LaunchRecorder()


def test_recording_names_a_known_architecture():
    with pytest.raises(ValueError, match="architecture"):
        LaunchRecorder(architecture=75)


def test_training_step_records_forward_loss_and_backward(step_launches):
    kernels = [launch.kernel for launch in step_launches]
    assert kernels.count("conv2d_forward_kernel") == 5
    assert kernels.count("conv2d_weight_grad_kernel") == 5
    assert kernels.count("conv2d_input_grad_kernel") == 4  # conv1's input (the images) gets no gradient
    assert kernels.count("linear_forward_kernel") == 3
    for name in ("lrn_forward_kernel", "lrn_backward_kernel", "max_pool2d_forward_kernel",
                 "max_pool2d_backward_kernel", "cross_entropy_forward_kernel", "cross_entropy_backward_kernel"):
        assert name in kernels, name


def test_recorded_launches_are_specialized_as_triton_would(step_launches):
    for launch in step_launches:
        for argument in launch.arguments:
            if argument.kind in ("i32", "i64") and argument.specialized:
                assert argument.value != 1, f"{launch.name}.{argument.name} equal to 1 must be a constant"
                assert argument.divisible_by_16 == (argument.value % 16 == 0), (launch.name, argument)
        assert all(len(grid) == 3 and min(grid) >= 1 for grid in launch.grids)
        assert 1 <= len(launch.configs) <= launch.total_configs
    # stride 1 of the innermost dimension is specialized to a constant somewhere in every GEMM's launch
    conv = next(launch for launch in step_launches if launch.kernel == "conv2d_forward_kernel")
    assert any(argument.kind == "constexpr" and argument.value == 1 for argument in conv.arguments
               if argument.name.endswith("stride"))


def test_launches_round_trip_through_json(step_launches):
    for launch in step_launches:
        again = Launch.from_json(launch.to_json())
        assert [again.specialization(config) for config in again.configs] == \
            [launch.specialization(config) for config in launch.configs]


def test_distinct_dedupes_by_specialization(step_launches):
    pairs = list(distinct(step_launches + step_launches))
    assert len(pairs) == len(list(distinct(step_launches)))
    assert len({launch.specialization(config) for launch, config in pairs}) == len(pairs)


# ------------------------------------------------------------------------------------------------ runtime policy

def _configs(*shared_kib: int) -> list[triton.Config]:
    return [triton.Config({"BLOCK": kib}, num_warps=4, num_stages=1) for kib in shared_kib]


def _estimate(config, named_args) -> int:
    return config.kwargs["BLOCK"] * 1024


@pytest.mark.parametrize("capability, fitting", [(80, [64, 160]), (90, [64, 160, 192, 224])])
def test_configs_over_the_shared_memory_limit_are_pruned_per_architecture(capability, fitting):
    configs = _configs(64, 160, 192, 224, 256)
    runtime.set_recording_architecture(runtime.ARCHITECTURES[capability])
    try:
        kept = runtime._fitting(configs, {}, _estimate)
    finally:
        runtime.set_recording_architecture(None)
    assert [config.kwargs["BLOCK"] for config in kept] == fitting


def test_the_smallest_config_survives_when_none_fits():
    runtime.set_recording_architecture(runtime.ARCHITECTURES[80])
    try:
        kept = runtime._fitting(_configs(256, 192), {}, _estimate)
    finally:
        runtime.set_recording_architecture(None)
    assert [config.kwargs["BLOCK"] for config in kept] == [192]


def test_pipelined_shared_memory_counts_stages_of_both_operand_tiles():
    estimate = runtime.pipelined_shared_memory("BLOCK_M", "BLOCK_N", "BLOCK_K", "a_pointer")
    config = triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=8, num_stages=3)
    assert estimate(config, {"a_pointer": torch.empty(0, dtype=torch.bfloat16)}) == 3 * (128 + 64) * 64 * 2


class _Tuner:
    """What triton's Autotuner exposes to the policy: its configs, prune_configs and _bench."""

    def __init__(self, survivors: int):
        self.configs = _configs(1, 2, 3)
        self.survivors = survivors
        self.timed = []

    def prune_configs(self, kwargs):
        return self.configs[:self.survivors]

    def _bench(self, *args, config, **kwargs):
        self.timed.append(config)
        return [1.0, 1.0, 1.0]


@pytest.mark.parametrize("survivors, timed", [(1, 0), (3, 3)])
def test_a_lone_surviving_config_is_not_timed(survivors, timed):
    tuner = _Tuner(survivors)
    runtime._time_only_rivals(tuner)
    for config in tuner.prune_configs({}):
        tuner._bench(config=config)
    assert len(tuner.timed) == timed


def test_config_labels_name_blocks_warps_and_stages():
    assert Config((("BLOCK", 64),), 8, 2).label == "BLOCK=64,warps=8,stages=2"
