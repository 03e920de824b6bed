"""tritonnet.kernels.interpreter: the numpy memory access and the patch-once launches give what Triton's own interpreter
gives."""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonnet.kernels import interpreter
from tritonnet.kernels.runtime import INTERPRET

pytestmark = pytest.mark.skipif(not INTERPRET, reason="Triton's interpreter only")

DTYPES = [np.float32, np.float64, np.float16, np.uint16, np.int32, np.int64, np.uint8, np.bool_]


def native():
    return interpreter.native_memory()


@settings(deadline=None, max_examples=60)
@given(dtype=st.sampled_from(DTYPES), size=st.integers(1, 300), shape=st.sampled_from([(-1,), (4, -1), (-1, 3)]),
       mask_kind=st.sampled_from(["all", "none", "random"]), data=st.data())
def test_masked_load_and_store_match_the_interpreters_own(dtype, size, shape, mask_kind, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    memory = (rng.random(size) * 100).astype(dtype)
    count = data.draw(st.integers(1, 64)) * (3 if shape != (-1,) else 1) * (4 if shape == (4, -1) else 1)
    index = rng.integers(0, size, count)
    pointers = (memory.ctypes.data + index * memory.itemsize).astype(np.uint64).reshape(shape)
    mask = {"all": np.ones(pointers.shape, bool), "none": np.zeros(pointers.shape, bool),
            "random": rng.random(pointers.shape) < 0.5}[mask_kind]
    other = (rng.random(pointers.shape) * 7).astype(dtype)
    expected = native().load(pointers, mask, other, np.dtype(dtype))
    got = interpreter.masked_load(pointers, mask, other, np.dtype(dtype), fallback=None)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)

    values = (rng.random(pointers.shape) * 50).astype(dtype)
    unique = np.zeros(pointers.shape, bool).reshape(-1)
    unique[np.unique(index, return_index=True)[1]] = True  # one writer per address: the order of duplicates is free
    mask &= unique.reshape(pointers.shape)
    theirs, ours = memory.copy(), memory.copy()
    for target in (theirs, ours):
        shifted = (pointers.astype(np.int64) - memory.ctypes.data + target.ctypes.data).astype(np.uint64)
        if target is theirs:
            native().store(shifted, values, mask)
        else:
            interpreter.masked_store(shifted, values, mask, fallback=None)
    np.testing.assert_array_equal(ours, theirs)


def test_misaligned_addresses_fall_back_to_the_interpreters_own():
    memory = np.arange(16, dtype=np.float32)
    pointers = np.array([memory.ctypes.data, memory.ctypes.data + 2], dtype=np.uint64)  # 2 bytes apart
    calls = []
    fallback = lambda *args: calls.append(args) or "fallback"  # noqa: E731
    assert interpreter.masked_load(pointers, np.ones(2, bool), np.zeros(2, np.float32), np.dtype(np.float32),
                                   fallback) == "fallback"
    assert interpreter.masked_store(pointers, np.zeros(2, np.float32), np.ones(2, bool), fallback) == "fallback"
    assert len(calls) == 2


@triton.jit
def _plus_one(values):
    return values + tl.full(values.shape, 1, values.dtype)


@triton.jit
def _helpers_kernel(input_pointer, output_pointer, count, BLOCK: tl.constexpr):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = index < tl.cdiv(count, 1)
    total = tl.zeros([BLOCK], dtype=tl.float32) + _plus_one(tl.load(input_pointer + index, mask=valid, other=0.0))
    tl.store(output_pointer + index, total, mask=valid)


def test_device_function_calls_run_inside_a_launch_and_the_language_is_restored_after():
    patched_before = tl.arange
    values = torch.arange(37, dtype=torch.float32)
    output = torch.empty_like(values)
    _helpers_kernel[(3,)](values, output, values.numel(), BLOCK=16)
    torch.testing.assert_close(output, values + 1)
    assert tl.arange is patched_before
    with pytest.raises(Exception):  # outside a launch a jit function still cannot be called as plain Python
        tl.arange(0, 16)


def test_a_launch_patches_the_language_once_and_outside_a_launch_every_call_patches():
    calls = []

    class Scope:
        pass

    patch_once = interpreter._patch_language_once(lambda fn: calls.append(fn) or Scope(), Scope)
    kernel, helper = _helpers_kernel.fn, _plus_one.fn  # both see triton.language as `tl`
    patch_once(helper)
    patch_once(helper)
    assert len(calls) == 2  # no launch: as Triton
    interpreter._launch.patched = set()
    try:
        patch_once(kernel)
        for _ in range(5):
            patch_once(helper)
    finally:
        interpreter._launch.patched = None
    assert len(calls) == 3
