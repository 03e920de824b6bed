"""tritonnet.kernels.interpreter: the numpy memory access and the patch-once launches give what Triton's own interpreter
gives."""

import warnings

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
MEMORY = np.arange(64, dtype=np.float32) * 0.5  # what the pointers drawn point into
FLOATS, INTS = (tl.float32, tl.float64), (tl.int32, tl.int64)
FELL_BACK = (LookupError,)


def _tensor(dtype, shape, rng):
    from triton.runtime.interpreter import TensorHandle, _get_np_dtype

    size = (1,) if shape is None else shape
    values = rng.integers(-6, 7, size) if dtype.is_int() else rng.normal(0, 4, size)
    values[rng.random(size) < 0.2] = 0  # division by zero, and equal elements
    if isinstance(dtype, tl.pointer_type):
        data = (MEMORY.ctypes.data + rng.integers(0, MEMORY.size, size) * 4).astype(np.uint64)
    else:
        data = (values != 0) if dtype == tl.int1 else values.astype(_get_np_dtype(dtype))
    return tl.core.tensor(TensorHandle(data, dtype), dtype if shape is None else tl.block_type(dtype, list(shape)))


OPERAND = st.one_of(
    st.tuples(st.just("tensor"), st.sampled_from(OPERAND_DTYPES + [POINTER]), st.sampled_from(SHAPES)),
    st.tuples(st.just("int"), st.sampled_from([0, 1, -3, 7, 2**31 - 1, -2**31, 2**31, 2**40])),
    st.tuples(st.just("float"), st.sampled_from([0.0, 1.5, -2.25, 1e-50, 3e38, float("inf"), float("nan")])),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("constexpr"), st.sampled_from([2, 0.5])),
    st.just(("none",)))


def _operand(drawn, rng):
    kind, *rest = drawn
    if kind == "tensor":
        return _tensor(rest[0], rest[1], rng)
    if kind == "none":
        return None
    return tl.constexpr(rest[0]) if kind == "constexpr" else rest[0]


def _fall_back(*args, **kwargs):
    raise LookupError("fell back")


def _front_end(function):
    """``function`` (a tensor method or a ``tl`` function) as the interpreter runs it without the fast paths."""
    from triton.runtime import interpreter as triton_interpreter

    return lambda *args: function(*args, _semantic=triton_interpreter.interpreter_semantic)


def _operators():
    from triton.runtime import interpreter as triton_interpreter

    return interpreter._Operators(triton_interpreter)


def _fast(method):
    operators = _operators()
    name = method.strip("_")
    swapped = method.startswith("__r") and name[1:] in interpreter._ARITHMETIC
    name = name[1:] if swapped else name
    if name in interpreter._COMPARISONS:
        return operators.comparison(name, _fall_back)
    if name in interpreter._ARITHMETIC:
        return operators.arithmetic(name, swapped, _fall_back)
    return operators.negate(_fall_back) if name == "neg" else getattr(operators, name)(_fall_back)


def _kind(value):
    value = value.value if isinstance(value, tl.constexpr) else value
    if isinstance(value, int) and not isinstance(value, bool) and not -2**31 <= value < 2**31:
        return "big int"
    return value.dtype if isinstance(value, tl.core.tensor) else type(value)


def _promised(name, lhs, rhs):
    """Whether the fast path for operator ``name`` must take these operands (its docstring's promise)."""
    a, b = _kind(lhs), _kind(rhs)
    int_like = lambda kind: kind in INTS or kind is int  # noqa: E731
    integers = int_like(a) and int_like(b) and (a in INTS or b in INTS)
    if name in ("and", "or", "xor"):
        return a == b == tl.int1 or integers
    if name == "add" and isinstance(a, tl.pointer_type):
        return int_like(b)
    if name in ("floordiv", "mod"):
        return integers
    if name == "truediv":
        return a in FLOATS and (b == a or b in (int, float)) or b in FLOATS and a in (int, float)
    if a in FLOATS:
        return b == a or b in (int, float)
    if b in FLOATS:
        return a in (int, float)
    return integers


BINARY_METHODS = [f"__{prefix}{name}__" for name in interpreter._ARITHMETIC for prefix in ("", "r")] + \
    [f"__{name}__" for name in interpreter._COMPARISONS]


def _check(method, fast, front_end, arguments, promised):
    expected = interpreter._outcome(lambda: front_end(*arguments))
    got = interpreter._outcome(lambda: fast(*arguments))
    if got == FELL_BACK:
        assert not promised or len(expected) == 1, f"{method} fell back for {arguments}"
    else:
        assert got == expected, f"{method} on {arguments}"


@settings(deadline=None, max_examples=300)
@given(lhs=OPERAND.filter(lambda o: o[0] == "tensor"), rhs=OPERAND, seed=st.integers(0, 2**32 - 1))
def test_fast_operators_give_what_the_front_end_gives(lhs, rhs, seed):
    """Each fast path's tensor (type, handle dtype, numpy data, bit for bit) or error is the front end's, for every
    operand pair drawn; and the pairs the docstring promises never fall back."""
    rng = np.random.default_rng(seed)
    self_, other = _tensor(lhs[1], lhs[2], rng), _operand(rhs, rng)
    for method in BINARY_METHODS:
        name = method.strip("_")
        swapped = method.startswith("__r") and name[1:] in interpreter._ARITHMETIC
        operands = (other, self_) if swapped else (self_, other)
        _check(method, _fast(method), _front_end(getattr(tl.core.tensor, method)), (self_, other),
               _promised(name[1:] if swapped else name, *operands))


@settings(deadline=None, max_examples=100)
@given(dtype=st.sampled_from(OPERAND_DTYPES + [POINTER]), shape=st.sampled_from(SHAPES),
       slices=st.lists(st.sampled_from([None, slice(None), slice(1, None), 0]), min_size=1, max_size=4),
       single=st.booleans())
def test_fast_indexing_gives_what_the_front_end_gives(dtype, shape, slices, single):
    value = _tensor(dtype, shape, np.random.default_rng(0))
    index = slices[0] if single else tuple(slices)
    used = slices[:1] if single else slices
    promised = shape is not None and all(item is None or item == slice(None) for item in used)
    _check("__getitem__", _fast("__getitem__"), _front_end(tl.core.tensor.__getitem__), (value, index), promised)


@settings(deadline=None, max_examples=100)
@given(dtype=st.sampled_from(OPERAND_DTYPES + [POINTER]), shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**32 - 1),
       target=st.sampled_from(OPERAND_DTYPES + [tl.constexpr(tl.float32)]))
def test_fast_negation_and_casts_give_what_the_front_end_gives(dtype, shape, seed, target):
    value = _tensor(dtype, shape, np.random.default_rng(seed))
    _check("__neg__", _fast("__neg__"), _front_end(tl.core.tensor.__neg__), (value,), dtype in FLOATS + INTS)
    goal = getattr(target, "value", target)
    promised = goal == dtype or (dtype in INTS or dtype in FLOATS and goal in FLOATS) and goal in FLOATS + INTS
    _check("to", _fast("to"), _front_end(tl.core.tensor.to), (value, target), promised)


@settings(deadline=None, max_examples=200)
@given(condition=st.tuples(st.sampled_from([tl.int1, tl.int1, tl.int32]), st.sampled_from(SHAPES)),
       x=OPERAND, y=OPERAND, seed=st.integers(0, 2**32 - 1))
def test_fast_where_gives_what_the_front_end_gives(condition, x, y, seed):
    rng = np.random.default_rng(seed)
    condition, x, y = _tensor(*condition, rng), _operand(x, rng), _operand(y, rng)
    promised = (condition.dtype == tl.int1 and condition.type.is_block() and _promised("add", x, y)
                and isinstance(x, tl.core.tensor) | isinstance(y, tl.core.tensor)
                and not isinstance(_kind(x), tl.pointer_type))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the front end's warning for a non-int1 condition
        _check("where", _fast("where"), _front_end(tl.where), (condition, x, y), promised)


@settings(deadline=None, max_examples=200)
@given(pointer=st.sampled_from([(POINTER, shape) for shape in SHAPES] + [(tl.pointer_type(tl.int32), (4,))]),
       mask=st.one_of(st.tuples(st.just("tensor"), st.just(tl.int1), st.sampled_from(SHAPES)), OPERAND),
       other=st.one_of(st.sampled_from([("float", 2.5), ("int", -3), ("none",)]), OPERAND),
       seed=st.integers(0, 2**32 - 1))
def test_fast_load_gives_what_the_front_end_gives(pointer, mask, other, seed):
    rng = np.random.default_rng(seed)
    pointer, mask, other = _tensor(*pointer, rng), _operand(mask, rng), _operand(other, rng)
    element, shape = pointer.dtype.element_ty, pointer.shape
    def fits(value):  # broadcasts to the pointers' shape
        if not isinstance(value, tl.core.tensor) or not value.type.is_block():
            return False
        try:
            return np.broadcast_shapes(tuple(value.shape), tuple(shape)) == tuple(shape)
        except ValueError:
            return False

    promised = pointer.type.is_block() and (mask is None and other is None or isinstance(mask, tl.core.tensor) and (
        mask.dtype == tl.int1 and fits(mask) and (
            other is None or isinstance(other, tl.core.tensor) and other.dtype == element and fits(other)
            or element == tl.float32 and _kind(other) in (int, float) or element in INTS and _kind(other) is int)))
    _check("load", _fast("load"), _front_end(tl.load), (pointer, mask, other), promised)


@settings(deadline=None, max_examples=200)
@given(pointer=st.sampled_from([(POINTER, shape) for shape in SHAPES] + [(tl.pointer_type(tl.int32), (4,))]),
       value=st.one_of(st.tuples(st.just("tensor"), st.just(tl.float32), st.sampled_from(SHAPES)), OPERAND),
       mask=st.one_of(st.tuples(st.just("tensor"), st.just(tl.int1), st.sampled_from(SHAPES)), OPERAND),
       seed=st.integers(0, 2**32 - 1))
def test_fast_store_writes_what_the_front_end_writes(pointer, value, mask, seed):
    """The memory after a store through the fast path equals the memory after the same store through the front end
    (or both raise the same error); the promised operands never fall back."""
    from triton.runtime.interpreter import TensorHandle

    kind, shape = pointer
    rng = np.random.default_rng(seed)
    index = rng.permutation(MEMORY.size)[:int(np.prod(shape or (1,)))].reshape(shape or (1,))  # distinct addresses
    value, mask = _operand(value, rng), _operand(mask, rng)
    memories, outcomes = [], []
    for store in (_front_end(tl.store), _fast("store")):
        memory = MEMORY.copy()
        addresses = (memory.ctypes.data + index * 4).astype(np.uint64)
        pointers = tl.core.tensor(TensorHandle(addresses, kind), kind if shape is None else tl.block_type(kind, list(shape)))
        with np.errstate(all="ignore"):
            try:
                store(pointers, value, mask)
                outcomes.append(None)
            except Exception as error:  # noqa: BLE001 - compared by type
                outcomes.append(type(error))
        memories.append(memory)
    if outcomes[1] is LookupError:  # fell back
        fits = lambda v: isinstance(v, tl.core.tensor) and v.type.is_block() and _broadcasts(v.shape, shape)  # noqa
        promised = shape is not None and isinstance(value, tl.core.tensor) and value.dtype == kind.element_ty and (
            fits(value) or not value.type.is_block()) and (mask is None or isinstance(mask, tl.core.tensor) and (
                mask.dtype == tl.int1 and (fits(mask) or not mask.type.is_block())))
        assert not promised or outcomes[0] is not None, (value, mask)
        return
    assert outcomes[0] == outcomes[1]
    np.testing.assert_array_equal(memories[0], memories[1])


def _broadcasts(shape, target):
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False
