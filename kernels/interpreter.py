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

import numpy as np


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
    """Each address's element index from the lowest, the element count up to the highest, and the lowest address,
    for ``addresses`` (uint64, at least one) to elements of ``itemsize`` bytes; None when an address is not a whole
    number of elements from the lowest (then the caller falls back)."""
    low = int(addresses.min())
    offsets = addresses - np.uint64(low)
    shift = itemsize.bit_length() - 1
    if itemsize != 1 << shift or np.bitwise_and(offsets, np.uint64(itemsize - 1)).any():
        return None
    index = offsets >> np.uint64(shift) if shift else offsets
    count = int(index.max()) + 1
    return index, count, low


def masked_load(pointers: np.ndarray, mask: np.ndarray, other: np.ndarray, dtype: np.dtype, fallback) -> np.ndarray:
    """``fallback``'s (the interpreter's C++ load) result, computed with numpy: ``pointers[i]``'s element where
    ``mask[i]``, else ``other[i]``. Only masked-in addresses are read, as there."""
    dtype = np.dtype(dtype)
    mask = np.broadcast_to(mask, pointers.shape)
    every = bool(mask.all())
    addresses = pointers.reshape(-1) if every else pointers[mask]
    if addresses.size == 0:
        return np.array(np.broadcast_to(other, pointers.shape), dtype=dtype)
    span = _span(addresses, dtype.itemsize)
    if span is None:
        return fallback(pointers, mask, other, dtype)
    index, count, low = span
    values = np.asarray(_Memory(low, count, dtype))[index]
    if every:
        return values.reshape(pointers.shape)
    result = np.array(np.broadcast_to(other, pointers.shape), dtype=dtype)
    result[mask] = values
    return result


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
    if span is None:
        return fallback(pointers, values, mask)
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


def native_memory():
    """The interpreter's own C++ load and store (what :class:`_FastMemory` stands in for)."""
    from triton.runtime import interpreter

    memory = interpreter._interpreter
    return memory._native if isinstance(memory, _FastMemory) else memory


def install() -> None:
    """Apply every change above (once). Each looks for the interpreter internals it replaces and, where a Triton
    release has reshaped them, leaves that part of the interpreter as it is."""
    single_threaded_blas()
    overflow_checks(os.environ.get("TRITONNET_INTERPRETER_OVERFLOW_CHECKS", "0").strip().lower()
                    in ("1", "true", "yes", "on"))
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
        interpreter._patch_lang = _patch_language_once(patch_language, scope_type)
