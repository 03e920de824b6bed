"""What tritonnet changes about Triton's interpreter, and why. Installed by :mod:`tritonnet.kernels.runtime` in
interpreter mode only; none of it changes what a kernel computes, only what the interpreter spends computing it.

The interpreter runs a kernel body once per program, each ``tl`` operation a numpy pass over a tile. Measured on one
alexnet_small training step (batch 32, fp32, triton 3.9, 2-core machine):

- **Memory access.** Its masked load and store are a C++ loop over the tile's 64-bit addresses, 22 ns per element
  in address order and 39 ns scattered, against numpy's 2 and 9 ns for the same gather. The step loads 71 million
  elements: 2.8 of its 8.4 s. :func:`masked_load` and :func:`masked_store` view the memory the addresses span as
  one numpy array and gather or scatter with an index into it.
- **Device-function calls.** Every call of a ``@triton.jit`` helper from a kernel (``tl.zeros``, ``tl.cdiv``, our
  ``_window_chunk``) re-patches ``triton.language`` for the interpreter, 12 ``inspect.getmembers`` scans, about
  0.5 ms, although the launch has already patched it: 1,200 such calls in the step. Patching once per launch is
  :func:`_patch_language_once`.
- **Operators.** Each ``tl`` operation goes through Triton's front end (type promotion, explicit splats and
  broadcasts) before its numpy pass: about 130 us an operation, 12,000 operations a step at batch 16. The commonest
  (arithmetic, comparisons, ``x[:, None]``, ``-x``, ``x.to``, ``tl.where``, ``tl.load``, ``tl.store``) take
  :class:`_Operators`' fast paths, about 18 us, with the same result to the bit (the step at batch 16, one process:
  2.75 -> 1.5 s). They are checked
  against the front end when installed, and left out (with a warning) if a Triton release decides differently.
- **Launches from threads.** A launch patches ``triton.language`` for its duration, so two threads launching at once
  would see each other's half-patched module: one lock around each launch.
- **BLAS threads** and **int32 overflow checks**: below.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import threading
import warnings

import numpy as np


def environment_flag(name: str, default: bool = False) -> bool:
    """Whether environment variable ``name`` says on (1, true, yes, on) or off (anything else); ``default`` when
    unset."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def single_threaded_blas() -> None:
    """The interpreter runs each tl.dot as a numpy matmul of one tile. At those sizes multi-threaded OpenBLAS spends
    longer waking and waiting for its threads than multiplying, the more so on a busy machine (measured: a 128x512x16
    matmul 30 ms instead of 0.1 ms; alexnet_small's conv layers 2.8x slower). Use one BLAS thread unless the user
    set OPENBLAS_NUM_THREADS."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    try:
        with open("/proc/self/maps") as maps:
            libraries = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return
    for path in libraries:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                       "openblas_set_num_threads64_"):
            if hasattr(library, symbol):
                getattr(library, symbol)(1)
                break


def overflow_checks(enabled: bool) -> None:
    """The interpreter checks every int32 add, subtract and multiply for overflow: a cast of both operands to int64,
    two comparisons and an assert, about six more numpy passes per integer op (measured: 15% of an alexnet_small
    training step; max-pool's backward 1.9x slower). A compiled kernel does the same only in debug mode
    (``TRITON_DEBUG=1``), so by default the interpreter runs integer math as a release build does.
    ``TRITONNET_INTERPRETER_OVERFLOW_CHECKS=1`` turns the checks back on (kernels that must stay inside int32 also
    say so with explicit limits in their launch functions)."""
    from triton.runtime import interpreter

    builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if options is not None and hasattr(options, "sanitize_overflow"):
        builder.options = dataclasses.replace(options, sanitize_overflow=enabled)


# ------------------------------------------------------------------------------------------------ memory access

class _Memory:
    """``count`` elements of ``dtype`` at address ``start``, as numpy's array interface: ``np.asarray`` of it is a
    view of that memory, no copy and no read until indexed."""

    def __init__(self, start: int, count: int, dtype: np.dtype):
        self.__array_interface__ = {"data": (start, False), "shape": (count,), "typestr": dtype.str, "version": 3}


def _span(addresses: np.ndarray, itemsize: int) -> tuple[np.ndarray, int, int] | None:
    """Each address's element index from the lowest (int64), the element count up to the highest, and the lowest
    address, for ``addresses`` (uint64, at least one) to elements of ``itemsize`` bytes; None when an address is not a
    whole number of elements from the lowest (then the caller falls back). Five passes, each vectorised: min, max,
    subtract, an OR-reduction for the alignment and an in-place shift (user-space addresses fit int64)."""
    signed = addresses.view(np.int64)
    low, high = int(signed.min()), int(signed.max())
    index = signed - low
    if itemsize > 1:
        shift = itemsize.bit_length() - 1
        if itemsize != 1 << shift or int(np.bitwise_or.reduce(index, axis=None)) & (itemsize - 1):
            return None
        np.right_shift(index, shift, out=index)
    return index, (high - low) // itemsize + 1, low


def masked_load(pointers: np.ndarray, mask: np.ndarray, other: np.ndarray, dtype: np.dtype, fallback) -> np.ndarray:
    """``fallback``'s (the interpreter's C++ load) result, computed with numpy: ``pointers[i]``'s element where
    ``mask[i]``, else ``other[i]``. Only masked-in addresses are read, as there: a masked-off lane reads the first
    masked-in lane's element, and ``np.where`` puts ``other`` in its place (cheaper than compressing the addresses
    and scattering the values back: 10.3 -> 7.3 ms for a 1024 x 512 gather with a partial mask)."""
    dtype = np.dtype(dtype)
    mask = np.broadcast_to(mask, pointers.shape)
    every = bool(mask.all())
    addresses = pointers
    if not every:
        first = int(mask.argmax())
        if not mask.flat[first]:  # nothing masked in
            return np.array(np.broadcast_to(other, pointers.shape), dtype=dtype)
        addresses = np.where(mask, pointers, pointers[np.unravel_index(first, pointers.shape)])
    span = _span(addresses, dtype.itemsize)
    if span is None:  # the C++ load takes a mask and an other of the pointers' shape
        return fallback(pointers, np.ascontiguousarray(mask),
                        np.ascontiguousarray(np.broadcast_to(other, pointers.shape)), dtype)
    index, count, low = span
    values = np.asarray(_Memory(low, count, dtype)).take(index)
    return values if every else np.where(mask, values, other).astype(dtype, copy=False)


def masked_store(pointers: np.ndarray, values: np.ndarray, mask: np.ndarray, fallback) -> None:
    """``fallback``'s (the interpreter's C++ store) effect, with numpy: ``values[i]`` written to ``pointers[i]``
    where ``mask[i]``. Only masked-in addresses are written."""
    mask = np.broadcast_to(mask, pointers.shape)
    values = np.broadcast_to(values, pointers.shape)
    every = bool(mask.all())
    addresses = pointers.reshape(-1) if every else pointers[mask]
    if addresses.size == 0:
        return None
    span = _span(addresses, values.dtype.itemsize)
    if span is None:  # the C++ store takes values and a mask of the pointers' shape
        return fallback(pointers, np.ascontiguousarray(values), np.ascontiguousarray(mask))
    index, count, low = span
    memory = np.asarray(_Memory(low, count, values.dtype))
    memory[index] = values.reshape(-1) if every else values[mask]
    return None


class _FastMemory:
    """Stands in for the interpreter's C++ module: its own ``load`` and ``store``, everything else delegated."""

    def __init__(self, native):
        self._native = native

    def load(self, pointers, mask, other, dtype):
        return masked_load(pointers, mask, other, dtype, self._native.load)

    def store(self, pointers, values, mask):
        return masked_store(pointers, values, mask, self._native.store)

    def __getattr__(self, name):
        return getattr(self._native, name)


# ------------------------------------------------------------------------------------------------ launches

_launch = threading.local()  # .patched: ids of the language modules this thread's running launch has patched


def _track_launches(grid_executor) -> None:
    """Mark the span of each launch, so :func:`_patch_language_once` knows which calls happen inside one."""
    call = grid_executor.__call__

    @functools.wraps(call)
    def launch(self, *args, **kwargs):
        _launch.patched = set()
        try:
            return call(self, *args, **kwargs)
        finally:
            _launch.patched = None

    grid_executor.__call__ = launch


def _patch_language_once(patch_language, scope_type):
    """``_patch_lang`` that patches each language module once per launch: the launch's own call patches (and its
    scope is restored when the launch ends, as before); a device-function call inside the launch whose modules are
    already patched patches nothing. Outside a launch every call patches, as Triton does."""

    @functools.wraps(patch_language)
    def patch_once(fn):
        patched = getattr(_launch, "patched", None)
        if patched is None:
            return patch_language(fn)
        modules = {id(value) for value in _language_modules(fn)}
        if patched and modules <= patched:
            return scope_type()
        patched |= modules
        return patch_language(fn)

    return patch_once


def _with_operators(patch_language, operators: _Operators):
    """``_patch_lang`` followed by :meth:`_Operators.install` into the same scope."""

    @functools.wraps(patch_language)
    def patch(fn):
        scope = patch_language(fn)
        operators.install(scope)
        return scope

    return patch


def _language_modules(fn) -> list:
    """The modules ``_patch_lang(fn)`` patches: ``triton.language`` and ``triton.language.core`` as ``fn`` sees
    them."""
    import triton.language as tl

    return [value for value in fn.__globals__.values() if value is tl or value is tl.core]


def _serialise_launches(interpreted_function) -> None:
    lock = threading.RLock()
    run = interpreted_function.run

    @functools.wraps(run)
    def serialised_run(self, *args, **kwargs):
        with lock:
            return run(self, *args, **kwargs)

    serialised_run._tritonnet_installed = True
    interpreted_function.run = serialised_run


# ------------------------------------------------------------------------------------------------ operators

# Binary operators with a fast path (each as __op__ and the swapped __rop__: ``1 - x`` calls ``x.__rsub__(1)``): the
# builder method for float, signed-integer and int1 operands (None: that kind goes the front end's way).
_ARITHMETIC = {"add": ("create_fadd", "create_add", None), "sub": ("create_fsub", "create_sub", None),
               "mul": ("create_fmul", "create_mul", None), "truediv": ("create_fdiv", None, None),
               "floordiv": (None, "create_sdiv", None), "mod": (None, "create_srem", None),
               "and": (None, "create_and", "create_and"), "or": (None, "create_or", "create_or"),
               "xor": (None, "create_xor", "create_xor")}
# Comparisons: the builder method for float and signed-integer operands; the result is int1.
_COMPARISONS = {"lt": ("create_fcmpOLT", "create_icmpSLT"), "le": ("create_fcmpOLE", "create_icmpSLE"),
                "gt": ("create_fcmpOGT", "create_icmpSGT"), "ge": ("create_fcmpOGE", "create_icmpSGE"),
                "eq": ("create_fcmpOEQ", "create_icmpEQ"), "ne": ("create_fcmpUNE", "create_icmpNE")}
INT32_RANGE = range(-2**31, 2**31)
# TRITONNET_INTERPRETER_FAST_OPERATORS=0 runs every operation through Triton's front end (see _Operators).
FAST_OPERATORS = environment_flag("TRITONNET_INTERPRETER_FAST_OPERATORS", default=True)


class _Operators:
    """Fast paths for a kernel's commonest operations: ``+ - * / // % & | ^``, comparisons, ``x[:, None]``, ``-x``,
    ``x.to(dtype)``, ``tl.where``, ``tl.load`` and ``tl.store``.

    The interpreter runs each ``tl`` operation through Triton's front end (``triton.language.semantic``: type
    promotion, scalar materialisation, broadcasting by explicit splats), then one numpy pass. For a tile op that front
    end costs about 130 us against the pass's 1-20 us (measured: ``x * 1.0001 + 1`` on a 16-element tile, 130 us an
    op), and an alexnet-small training step at batch 16 runs about 12,000 of them. Each fast path here decides the
    result type by the same rules for the operand types it accepts (float32 or float64 with itself or a Python
    number; int32 or int64 with either or a Python int in int32's range; int1 with int1 for ``& | ^``; a pointer
    plus an int32 or int64 offset) and calls the same builder method the front end would, so the numpy data are
    those the front end makes, bit for bit (tests/test_interpreter.py checks every accepted combination against it).
    Anything else (other dtypes, bool scalars, shapes that do not broadcast, errors) goes the front end's way. Off
    while the interpreter checks integer overflow, which the front end does for integer +, - and *."""

    def __init__(self, interpreter):
        import triton.language as tl

        self.tl, self.builder, self.tensor = tl, interpreter.interpreter_builder, tl.core.tensor
        self.floats = (tl.float32, tl.float64)
        self.ints = (tl.int32, tl.int64)
        self.int1, self.int64 = tl.int1, tl.int64
        self.constexpr, self.block_type, self.pointer_type = tl.constexpr, tl.block_type, tl.pointer_type
        self.handle_type = interpreter.TensorHandle
        self.numpy_types = {tl.float32: np.float32, tl.float64: np.float64, tl.int32: np.int32, tl.int64: np.int64}
        self.attributes: dict = {}  # (dtype, shape): a tensor's attributes but its handle

    def result(self, handle, dtype, shape):
        """``tl.tensor(handle, type)`` for a block of ``shape`` (None: a scalar) of ``dtype``. The constructor's
        attributes (type, shape and element count as constexprs) are made once per type and copied after."""
        if isinstance(dtype, self.pointer_type):  # unhashable (it defines __eq__ alone)
            return self.tensor(handle, dtype if shape is None else self.block_type(dtype, list(shape)))
        key = (dtype, shape)
        attributes = self.attributes.get(key)
        if attributes is None:
            made = self.tensor(handle, dtype if shape is None else self.block_type(dtype, list(shape)))
            attributes = self.attributes[key] = {**vars(made), "handle": None}
            return made
        value = object.__new__(self.tensor)
        vars(value).update(attributes)
        value.handle = handle
        return value

    def shape(self, value):
        """A tensor's block shape as a tuple, or None for a scalar tensor."""
        kind = value.type
        return tuple(kind.shape) if isinstance(kind, self.block_type) else None

    def broadcast(self, left, right):
        """The block shape of a binary op's result (None: both scalars), or False when they do not broadcast."""
        if left is None or right is None:
            return right if left is None else left
        if len(left) != len(right):  # the front end prepends ones to the shorter
            rank = max(len(left), len(right))
            left, right = (1,) * (rank - len(left)) + left, (1,) * (rank - len(right)) + right
        shape = []
        for a, b in zip(left, right):
            if a != b and a != 1 and b != 1:
                return False
            shape.append(b if a == 1 else a)
        return tuple(shape)

    def operands(self, lhs, rhs):
        """(lhs handle, rhs handle, dtype both now have, result shape), or None when the front end must decide."""
        tensor = self.tensor
        if type(lhs) is self.constexpr:
            lhs = lhs.value
        if type(rhs) is self.constexpr:
            rhs = rhs.value
        left, right = type(lhs) is tensor, type(rhs) is tensor
        if left and right:
            shape = self.broadcast(self.shape(lhs), self.shape(rhs))
            if shape is False:
                return None
            dtype = lhs.dtype
            if dtype == rhs.dtype:
                return lhs.handle, rhs.handle, dtype, shape
            if dtype not in self.ints or rhs.dtype not in self.ints:
                return None
            int64 = self.int64  # int32 with int64: the int32 one is sign-extended, as the front end's cast does
            return (lhs.handle if dtype == int64 else self.builder.create_int_cast(lhs.handle, int64, True),
                    rhs.handle if rhs.dtype == int64 else self.builder.create_int_cast(rhs.handle, int64, True),
                    int64, shape)
        if left == right:
            return None
        value, number = (lhs, rhs) if left else (rhs, lhs)
        dtype, kind = value.dtype, type(number)
        if not (kind is float and dtype in self.floats
                or kind is int and number in INT32_RANGE and (dtype in self.floats or dtype in self.ints)):
            return None
        constant = self.handle_type(np.array([number], dtype=self.numpy_types[dtype]), dtype)
        shape = self.shape(value)
        return (value.handle, constant, dtype, shape) if left else (constant, value.handle, dtype, shape)

    def arithmetic(self, name, swapped, slow):
        float_method, int_method, bool_method = _ARITHMETIC[name]

        def method(self_, other, *args, **kwargs):
            lhs, rhs = (other, self_) if swapped else (self_, other)
            if name == "add" and not args and not kwargs:
                pointer = self.pointer_add(lhs, rhs)
                if pointer is not None:
                    return pointer
            found = None if args or kwargs else self.operands(lhs, rhs)
            if found is not None:
                left, right, dtype, shape = found
                chosen = (float_method if dtype in self.floats else int_method if dtype in self.ints
                          else bool_method if dtype == self.int1 else None)
                if chosen is not None:
                    return self.result(getattr(self.builder, chosen)(left, right), dtype, shape)
            return slow(self_, other, *args, **kwargs)

        return method

    def comparison(self, name, slow):
        float_method, int_method = _COMPARISONS[name]

        def method(self_, other, *args, **kwargs):
            found = None if args or kwargs else self.operands(self_, other)
            if found is not None:
                left, right, dtype, shape = found
                chosen = float_method if dtype in self.floats else int_method if dtype in self.ints else None
                if chosen is not None:
                    return self.result(getattr(self.builder, chosen)(left, right), self.int1, shape)
            return slow(self_, other, *args, **kwargs)

        return method

    def pointer_add(self, lhs, rhs):
        """``pointer + offset`` (either order) for int32 or int64 offsets, as the front end's ``create_addptr``."""
        tensor = self.tensor
        if type(rhs) is tensor and isinstance(rhs.dtype, self.pointer_type):
            lhs, rhs = rhs, lhs
        if type(lhs) is not tensor or not isinstance(lhs.dtype, self.pointer_type):
            return None
        if type(rhs) is self.constexpr:
            rhs = rhs.value
        if type(rhs) is tensor and rhs.dtype in self.ints:
            offset, shape = rhs.handle, self.broadcast(self.shape(lhs), self.shape(rhs))
        elif type(rhs) is int and rhs in INT32_RANGE:
            offset, shape = self.handle_type(np.array([rhs], dtype=np.int32), self.ints[0]), self.shape(lhs)
        else:
            return None
        if shape is False:
            return None
        return self.result(self.builder.create_addptr(lhs.handle, offset), lhs.dtype, shape)

    def getitem(self, slow):
        def method(self_, slices, *args, **kwargs):
            shape = self.shape(self_) if type(self_) is self.tensor and not args and not kwargs else None
            if shape is None:
                return slow(self_, slices, *args, **kwargs)
            slices = slices if type(slices) is tuple else (slices,)
            data, shape, indexed = self_.handle.data, list(shape), 0
            for dim, item in enumerate(slices):
                if item is None:
                    data = np.expand_dims(data, dim)
                    shape.insert(dim, 1)
                elif type(item) is slice and item == slice(None) and indexed < len(self_.shape):
                    indexed += 1
                else:
                    return slow(self_, slices, *args, **kwargs)
            return self.result(self.handle_type(data, self_.handle.dtype.scalar), self_.dtype, tuple(shape))

        return method

    def negate(self, slow):
        def method(self_, *args, **kwargs):
            dtype = self_.dtype if type(self_) is self.tensor and not args and not kwargs else None
            if dtype in self.floats:
                return self.result(self.builder.create_fneg(self_.handle), dtype, self.shape(self_))
            if dtype in self.ints:  # the front end's 0 - x
                zero = self.builder.get_null_value(dtype)
                return self.result(self.builder.create_sub(zero, self_.handle), dtype, self.shape(self_))
            return slow(self_, *args, **kwargs)

        return method

    def to(self, slow):
        """``x.to(dtype)`` among int32, int64, float32 and float64 (float to int excepted): the front end's casts
        there are all the builder's ``cast_impl``; the same dtype returns ``x`` itself, as there."""
        def method(self_, dtype, *args, **kwargs):
            if type(dtype) is self.constexpr:
                dtype = dtype.value
            source = self_.dtype if type(self_) is self.tensor and not args and not kwargs else None
            if source is not None and dtype == source:
                return self_
            if (source in self.ints or source in self.floats and dtype in self.floats) and (
                    dtype in self.ints or dtype in self.floats):
                return self.result(self.builder.cast_impl(self_.handle, dtype), dtype, self.shape(self_))
            return slow(self_, dtype, *args, **kwargs)

        return method

    def where(self, slow):
        """``tl.where(condition, x, y)`` for an int1 block condition, x and y as a binary operation takes them."""
        def function(condition, x, y, *args, **kwargs):
            if type(condition) is self.tensor and condition.dtype == self.int1 and not args and not kwargs:
                found = self.operands(x, y)
                shape = self.shape(condition)
                if found is not None and shape is not None:
                    left, right, dtype, values_shape = found
                    shape = self.broadcast(shape, values_shape)
                    if shape is not False:
                        return self.result(self.builder.create_select(condition.handle, left, right), dtype, shape)
            return slow(condition, x, y, *args, **kwargs)

        return function

    @staticmethod
    def default_memory_options(args, kwargs) -> bool:
        """Whether a ``tl.load`` or ``tl.store`` call passes no more positional arguments and leaves the cache,
        eviction and volatile settings at their defaults (the interpreter ignores them; the front end checks them)."""
        options = ("cache_modifier", "eviction_policy", "volatile")
        return not args and not set(kwargs) - set(options) and not any(kwargs.values())

    def load(self, slow):
        """``tl.load(pointers, mask, other)`` for a block of pointers (not to int1) with an int1 mask that broadcasts
        to it and ``other`` None, a tensor of the element type, or a Python number of a float32 or int32/int64
        element type; default cache and eviction settings."""
        def function(pointer, mask=None, other=None, *args, **kwargs):
            found = self.load_operands(pointer, mask, other) if self.default_memory_options(args, kwargs) else None
            if found is None:
                return slow(pointer, mask, other, *args, **kwargs)
            mask, other, element, shape = found
            if mask is None:
                handle = self.builder.create_load(pointer.handle, None, False)
            else:
                handle = self.builder.create_masked_load(pointer.handle, mask, other, None, False)
            return self.result(handle, element, shape)

        return function

    def load_operands(self, pointer, mask, other):
        """(mask handle, other handle, element type, block shape) for :meth:`load`, or None."""
        tensor = self.tensor
        if type(pointer) is not tensor or not isinstance(pointer.dtype, self.pointer_type):
            return None
        shape, element = self.shape(pointer), pointer.dtype.element_ty
        if shape is None or element == self.int1:
            return None
        if type(mask) is self.constexpr:
            mask = mask.value
        if type(other) is self.constexpr:
            other = other.value
        if mask is None:
            return (None, None, element, shape) if other is None else None
        if type(mask) is not tensor or mask.dtype != self.int1 or self.broadcast(shape, self.shape(mask)) != shape:
            return None
        if other is None or type(other) is tensor and other.dtype == element and self.broadcast(
                shape, self.shape(other)) == shape:
            return mask.handle, None if other is None else other.handle, element, shape
        kind = type(other)
        if element == self.floats[0] and (kind is float or kind is int and other in INT32_RANGE):
            constant = np.array([other], dtype=np.float32)
        elif element in self.ints and kind is int and other in INT32_RANGE:
            constant = np.array([other], dtype=self.numpy_types[element])
        else:
            return None
        return mask.handle, self.handle_type(constant, element), element, shape

    def store(self, slow):
        """``tl.store(pointers, value, mask)`` for a block of pointers (not to int1, not const), a value of the element
        type and an int1 mask (or none) that broadcast to it; default cache and eviction settings."""
        def function(pointer, value, mask=None, *args, **kwargs):
            tensor = self.tensor
            found = (self.default_memory_options(args, kwargs) and "volatile" not in kwargs
                     and type(pointer) is tensor and isinstance(pointer.dtype, self.pointer_type)
                     and not getattr(pointer.dtype, "const", False) and type(value) is tensor)
            shape = self.shape(pointer) if found else None
            if type(mask) is self.constexpr:
                mask = mask.value
            if (shape is not None and value.dtype == pointer.dtype.element_ty != self.int1
                    and self.broadcast(shape, self.shape(value)) == shape
                    and (mask is None or type(mask) is tensor and mask.dtype == self.int1
                         and self.broadcast(shape, self.shape(mask)) == shape)):
                if mask is None:
                    handle = self.builder.create_store(pointer.handle, value.handle, None)
                else:
                    handle = self.builder.create_masked_store(pointer.handle, value.handle, mask.handle, None)
                return tensor(handle, self.tl.void)
            return slow(pointer, value, mask, *args, **kwargs)

        return function

    def install(self, scope) -> None:
        """Put the fast paths in front of the methods ``_patch_lang`` has just patched (restored with them)."""
        tensor, language = self.tensor, self.tl
        for name in _ARITHMETIC:
            for swapped, method in ((False, f"__{name}__"), (True, f"__r{name}__")):
                scope.set_attr(tensor, method, self.arithmetic(name, swapped, getattr(tensor, method)))
        for name in _COMPARISONS:
            scope.set_attr(tensor, f"__{name}__", self.comparison(name, getattr(tensor, f"__{name}__")))
        scope.set_attr(tensor, "__getitem__", self.getitem(tensor.__getitem__))
        scope.set_attr(tensor, "__neg__", self.negate(tensor.__neg__))
        scope.set_attr(tensor, "to", self.to(tensor.to))
        scope.set_attr(language, "where", self.where(language.where))
        scope.set_attr(language, "load", self.load(language.load))
        scope.set_attr(language, "store", self.store(language.store))


def _outcome(call) -> tuple:
    """A tensor's type, handle dtype and numpy data (bit for bit), or the type of the error raised."""
    with np.errstate(all="ignore"):
        try:
            value = call()
        except Exception as error:  # noqa: BLE001 - compared by type
            return (type(error),)
    data = value.handle.data
    return str(value.type), str(value.handle.dtype), data.dtype, data.shape, data.tobytes()


def _agrees_with_front_end(operators: _Operators, interpreter) -> bool:
    """Whether each fast path gives what this Triton's front end gives on a few typical operands: the guard against a
    Triton release whose front end decides differently (tests/test_interpreter.py draws the whole space)."""
    import triton.language as tl

    semantic, handle = interpreter.interpreter_semantic, interpreter.TensorHandle

    def block(values, dtype):
        return tl.core.tensor(handle(values, dtype), tl.block_type(dtype, list(values.shape)))

    def fell_back(*args, **kwargs):
        raise LookupError("fell back")

    floats = block(np.array([[1.5, -2.0, 0.0, 3.25]], np.float32), tl.float32)
    ints = block(np.array([[7], [-3]], np.int32), tl.int32)
    longs = block(np.array([5, -9, 0, 2], np.int64), tl.int64)
    flags = block(np.array([[True], [False]]), tl.int1)
    some = block(np.array([True, False, True, True]), tl.int1)
    memory = np.arange(8, dtype=np.float32)
    pointers = block((memory.ctypes.data + 4 * np.arange(0, 8, 2)).astype(np.uint64), tl.pointer_type(tl.float32))
    tensor = tl.core.tensor
    cases = [(operators.arithmetic("add", False, fell_back), tensor.__add__, (floats, 0.5)),
             (operators.arithmetic("sub", True, fell_back), tensor.__rsub__, (ints, 3)),
             (operators.arithmetic("mul", False, fell_back), tensor.__mul__, (ints, longs)),
             (operators.arithmetic("truediv", False, fell_back), tensor.__truediv__, (floats, 3)),
             (operators.arithmetic("floordiv", False, fell_back), tensor.__floordiv__, (longs, -4)),
             (operators.arithmetic("mod", False, fell_back), tensor.__mod__, (ints, longs)),
             (operators.arithmetic("and", False, fell_back), tensor.__and__, (flags, flags)),
             (operators.arithmetic("add", False, fell_back), tensor.__add__, (pointers, longs)),
             (operators.comparison("lt", fell_back), tensor.__lt__, (floats, 1)),
             (operators.comparison("ne", fell_back), tensor.__ne__, (ints, longs)),
             (operators.getitem(fell_back), tensor.__getitem__, (longs, (None, slice(None)))),
             (operators.negate(fell_back), tensor.__neg__, (ints,)),
             (operators.to(fell_back), tensor.to, (ints, tl.float32)),
             (operators.where(fell_back), tl.where, (flags, floats, -1.0)),
             (operators.load(fell_back), tl.load, (pointers,)),
             (operators.load(fell_back), tl.load, (pointers, some, 2.5))]
    for fast, front_end, arguments in cases:
        expected = _outcome(lambda: front_end(*arguments, _semantic=semantic))
        if len(expected) == 1 or _outcome(lambda: fast(*arguments)) != expected:
            return False
    stored = []  # a store through the front end and one through the fast path, into two copies of the memory
    for store in (lambda *arguments: tl.store(*arguments, _semantic=semantic), operators.store(fell_back)):
        target = np.zeros(8, dtype=np.float32)
        addresses = block((target.ctypes.data + 4 * np.arange(0, 8, 2)).astype(np.uint64), tl.pointer_type(tl.float32))
        store(addresses, block(np.array([1.5, -2.0, 0.25, 3.0], np.float32), tl.float32), some)
        stored.append(target)
    return np.array_equal(*stored) and stored[0].any()


def native_memory():
    """The interpreter's own C++ load and store (what :class:`_FastMemory` stands in for)."""
    from triton.runtime import interpreter

    memory = interpreter._interpreter
    return memory._native if isinstance(memory, _FastMemory) else memory


def install() -> None:
    """Apply every change above (once). Each looks for the interpreter internals it replaces and, where a Triton
    release has reshaped them, leaves that part of the interpreter as it is."""
    single_threaded_blas()
    overflow_checks(environment_flag("TRITONNET_INTERPRETER_OVERFLOW_CHECKS"))
    from triton.runtime import interpreter

    function = interpreter.InterpretedFunction
    if getattr(function.run, "_tritonnet_installed", False):
        return
    _serialise_launches(function)
    native = getattr(interpreter, "_interpreter", None)
    if native is not None and hasattr(native, "load") and hasattr(native, "store"):
        interpreter._interpreter = _FastMemory(native)
    patch_language = getattr(interpreter, "_patch_lang", None)
    scope_type = getattr(interpreter, "_LangPatchScope", None)
    grid_executor = getattr(interpreter, "GridExecutor", None)
    if None not in (patch_language, scope_type, grid_executor):
        _track_launches(grid_executor)
        builder_options = getattr(getattr(interpreter, "interpreter_builder", None), "options", None)
        if FAST_OPERATORS and not getattr(builder_options, "sanitize_overflow", True):
            try:
                operators = _Operators(interpreter)
                agrees = _agrees_with_front_end(operators, interpreter)
            except Exception:  # noqa: BLE001 - a Triton whose internals moved: run without the fast paths
                agrees = False
            if agrees:
                patch_language = _with_operators(patch_language, operators)
            else:
                warnings.warn("tritonnet: this Triton's interpreter front end is not the one the fast operators in "
                              "tritonnet/kernels/interpreter.py were checked against; running without them (about "
                              "1.5x slower)", RuntimeWarning, stacklevel=2)
        interpreter._patch_lang = _patch_language_once(patch_language, scope_type)
