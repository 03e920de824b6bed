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


# ------------------------------------------------------------------------------------------------ fast operators

OPERAND_DTYPES = [tl.float32, tl.float64, tl.int32, tl.int64, tl.int1, tl.float16, tl.uint32, tl.int8]
SHAPES = [None, (4,), (2, 1), (1, 4), (2, 4), (2, 2, 4), (8,), (1,)]
POINTER = tl.pointer_type(tl.float32)


def _tensor(dtype, shape, rng):
    from triton.runtime.interpreter import TensorHandle, _get_np_dtype

    size = (1,) if shape is None else shape
    values = rng.integers(-6, 7, size) if dtype.is_int() else rng.normal(0, 4, size)
    values[rng.random(size) < 0.2] = 0  # division by zero, and equal elements
    data = (values != 0) if dtype == tl.int1 else values.astype(_get_np_dtype(dtype))
    if dtype == POINTER:
        data = (rng.integers(0, 64, size) * 4 + 2**20).astype(np.uint64)
    return tl.core.tensor(TensorHandle(data, dtype), dtype if shape is None else tl.block_type(dtype, list(shape)))


OPERAND = st.one_of(
    st.tuples(st.just("tensor"), st.sampled_from(OPERAND_DTYPES + [POINTER]), st.sampled_from(SHAPES)),
    st.tuples(st.just("int"), st.sampled_from([0, 1, -3, 7, 2**31 - 1, -2**31, 2**31, 2**40])),
    st.tuples(st.just("float"), st.sampled_from([0.0, 1.5, -2.25, 1e-50, 3e38, float("inf"), float("nan")])),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("constexpr"), st.sampled_from([2, 0.5])))


def _operand(drawn, rng):
    kind, *rest = drawn
    if kind == "tensor":
        return _tensor(rest[0], rest[1], rng)
    return tl.constexpr(rest[0]) if kind == "constexpr" else rest[0]


def _outcome(call):
    """(type, handle dtype, data) of call()'s tensor, or the exception's type."""
    with np.errstate(all="ignore"):
        try:
            value = call()
        except Exception as error:  # noqa: BLE001 - compared by type
            return type(error)
    return str(value.type), str(value.handle.dtype), value.handle.data.dtype, value.handle.data.shape, \
        value.handle.data.tobytes()


class _FellBack(Exception):
    pass


def _front_end(method):
    from triton.runtime import interpreter as triton_interpreter

    original = getattr(tl.core.tensor, method)
    return lambda self, *args: original(self, *args, _semantic=triton_interpreter.interpreter_semantic)


def _fast(method, operators):
    def fell_back(*args):
        raise _FellBack

    name = method.strip("_").removeprefix("r") if method.startswith("__r") else method.strip("_")
    if name in interpreter._COMPARISONS:
        return operators.comparison(name, fell_back)
    if name == "getitem":
        return operators.getitem(fell_back)
    return operators.arithmetic(name, method.startswith("__r"), fell_back)


# Operand pairs the fast path must take (the docstring's promise): anything else may fall back.
def _promised(method, lhs, rhs):
    def kind(value):
        value = value.value if isinstance(value, tl.constexpr) else value
        if isinstance(value, tl.core.tensor):
            return value.dtype
        return type(value)

    a, b = kind(lhs), kind(rhs)
    name = method.strip("_").removeprefix("r") if method.startswith("__r") else method.strip("_")
    floats, ints = (tl.float32, tl.float64), (tl.int32, tl.int64)
    in_range = all(not isinstance(v, int) or isinstance(v, bool) or -2**31 <= v < 2**31
                   for v in (getattr(lhs, "value", lhs), getattr(rhs, "value", rhs)))
    if not in_range:
        return False
    if name in ("and", "or", "xor"):
        return a == b == tl.int1 or (a in ints or a is int) and (b in ints or b is int) and (a in ints or b in ints)
    if name == "add" and isinstance(a, tl.pointer_type):
        return b in ints or b is int
    if name in ("truediv",):
        return a in floats and (b == a or b in (int, float)) or b in floats and a in (int, float)
    if name in ("floordiv", "mod"):
        return (a in ints or a is int) and (b in ints or b is int) and (a in ints or b in ints)
    numbers = (int, float)
    if a in floats:
        return b == a or b in numbers
    if b in floats:
        return a in numbers
    return (a in ints or a is int) and (b in ints or b is int) and (a in ints or b in ints)


BINARY_METHODS = [f"__{prefix}{name}__" for name in interpreter._ARITHMETIC for prefix in ("", "r")] + \
    [f"__{name}__" for name in interpreter._COMPARISONS]


@settings(deadline=None, max_examples=300)
@given(lhs=OPERAND.filter(lambda o: o[0] == "tensor"), rhs=OPERAND, seed=st.integers(0, 2**32 - 1))
def test_fast_operators_give_what_the_front_end_gives(lhs, rhs, seed):
    """Each fast path's tensor (type, handle dtype, numpy data, bit for bit) or error is the front end's, for every
    operand pair drawn; and the pairs the docstring promises never fall back."""
    from triton.runtime import interpreter as triton_interpreter

    rng = np.random.default_rng(seed)
    self_, other = _tensor(lhs[1], lhs[2], rng), _operand(rhs, rng)
    operators = interpreter._Operators(triton_interpreter)
    for method in BINARY_METHODS:
        expected = _outcome(lambda: _front_end(method)(self_, other))
        got = _outcome(lambda: _fast(method, operators)(self_, other))
        operands = (other, self_) if method.startswith("__r") else (self_, other)
        if got is _FellBack:
            assert not _promised(method, *operands) or isinstance(expected, type), \
                f"{method} fell back for {lhs} and {rhs}"
            continue
        assert got == expected, method


@settings(deadline=None, max_examples=100)
@given(dtype=st.sampled_from(OPERAND_DTYPES + [POINTER]), shape=st.sampled_from(SHAPES),
       slices=st.lists(st.sampled_from([None, slice(None), slice(1, None), 0]), min_size=1, max_size=4),
       single=st.booleans())
def test_fast_indexing_gives_what_the_front_end_gives(dtype, shape, slices, single):
    from triton.runtime import interpreter as triton_interpreter

    value = _tensor(dtype, shape, np.random.default_rng(0))
    index = slices[0] if single else tuple(slices)
    expected = _outcome(lambda: _front_end("__getitem__")(value, index))
    got = _outcome(lambda: _fast("__getitem__", interpreter._Operators(triton_interpreter))(value, index))
    if got is _FellBack:
        promised = shape is not None and all(item is None or item == slice(None) for item in slices[:1 if single else 4])
        assert not promised or isinstance(expected, type), f"{index} fell back on {shape}"
        return
    assert got == expected
