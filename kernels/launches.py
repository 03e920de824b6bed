"""The launch recorder: every Triton launch a callable makes, as a GPU would make it, recorded on a CPU.

One API answers "what does this model launch?" for the compile check (kernels.gpu_compile), the roofline plan
(benchmarks/plan.py) and the GPU check's compile budget (benchmarks/budget.py):

    with LaunchRecorder(architecture=90) as recorder:        # in a TRITON_INTERPRET=0 process
        loss = functional.cross_entropy(model(images), labels)   # meta tensors: shapes only
        loss.backward()
    recorder.launches                                          # list[Launch]

    record_steps([Step("alexnet", 128, "bf16")])              # from any process: a subprocess does the above

A recording hooks ``KernelInterface.__getitem__`` (``kernel[grid](...)``, the one launch syntax of jitted,
autotuned and heuristics-wrapped kernels), so launch functions are recorded unchanged. In a dry run (the default)
a launch is recorded and not executed: with tensors on the ``meta`` device no data exists, and a full-size step is
recorded in seconds. The process must run with ``TRITON_INTERPRET=0`` so launch functions take their GPU paths
(autotuned configs, GPU algorithms); :func:`record_steps` starts such a process.

For each launch the recorder keeps what Triton would compile and run:
- the kernel (module and name), and the grid evaluated for each config;
- the autotuner's configs that survive its pruning for this launch and architecture (``early_config_prune``,
  including the shared-memory limit of :mod:`kernels.runtime`), and the autotune key;
- each argument's specialization as Triton computes it at launch: pointers as ``*dtype`` and whether the address is
  16-byte aligned (a meta tensor's address is its storage offset: torch allocations are 16-byte aligned), integers
  as ``i32``/``i64`` with divisibility by 16, integers equal to 1 as the constant 1, constexprs by value.

"Chosen config" without a GPU: the autotuner would time the survivors; the recorder stands in the first surviving
config (:attr:`Launch.chosen`), in declaration order, and says so wherever it is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Iterator

LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion", "launch_cooperative_grid",
                  "launch_pdl")
DEFAULT_WARPS, DEFAULT_STAGES = 4, 3  # triton.Config's defaults, which a plain jit launch gets too


@dataclasses.dataclass(frozen=True)
class Argument:
    """One kernel argument as Triton specializes it: ``kind`` is the compile signature's type (``*bf16``, ``i32``,
    ``fp32``, ``u1``, ``constexpr``); ``divisible_by_16`` the alignment attribute (pointers: the address; ints: the
    value); ``value`` the value of constexprs and ints (None for pointers); ``shape``/``strides``/``element_size``
    describe a tensor (for byte counts)."""

    name: str
    kind: str
    divisible_by_16: bool = False
    value: Any = None
    shape: tuple[int, ...] | None = None
    strides: tuple[int, ...] | None = None
    element_size: int | None = None
    specialized: bool = True  # False for a parameter the kernel declares do_not_specialize

    @property
    def is_pointer(self) -> bool:
        return self.kind.startswith("*")


@dataclasses.dataclass(frozen=True)
class Config:
    """A GPU tile config: block sizes (and other meta-parameters), warps and pipeline stages."""

    blocks: tuple[tuple[str, Any], ...]
    num_warps: int = DEFAULT_WARPS
    num_stages: int = DEFAULT_STAGES

    @property
    def label(self) -> str:
        tiles = ",".join(f"{name}={value}" for name, value in self.blocks)
        return f"{tiles}{',' if tiles else ''}warps={self.num_warps},stages={self.num_stages}"


@dataclasses.dataclass(frozen=True)
class Launch:
    """One recorded ``kernel[grid](...)``. ``arguments`` are the kernel's parameters in order, specialized, with the
    chosen config's meta-parameters filled in; ``configs`` are the autotune survivors (one for an untuned kernel),
    each with its own ``grids`` entry; ``autotune_key`` is None for an untuned kernel."""

    module: str
    kernel: str
    arguments: tuple[Argument, ...]
    configs: tuple[Config, ...]
    grids: tuple[tuple[int, int, int], ...]
    autotune_key: tuple | None = None
    total_configs: int = 1  # configs declared before pruning

    @property
    def name(self) -> str:
        return f"{self.module.rsplit('.', 1)[-1]}.{self.kernel}"

    @property
    def chosen(self) -> Config:
        """The stand-in for the autotuner's choice: the first surviving config."""
        return self.configs[0]

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.grids[0]

    def argument(self, name: str) -> Argument:
        return next(argument for argument in self.arguments if argument.name == name)

    def specialization(self, config: Config) -> tuple:
        """What makes a distinct compiled kernel: the kernel, every argument's type, alignment and constexpr value,
        and the config (its meta-parameters overriding the arguments of the same name)."""
        blocks = dict(config.blocks)
        arguments = tuple((argument.name, "constexpr", repr(blocks[argument.name])) if argument.name in blocks
                          else (argument.name, argument.kind, argument.divisible_by_16,
                                repr(argument.value) if argument.kind == "constexpr" else None)
                          for argument in self.arguments)
        return (self.module, self.kernel, arguments, config.num_warps, config.num_stages)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Launch:
        arguments = tuple(Argument(**{**argument, "shape": _tuple(argument["shape"]),
                                      "strides": _tuple(argument["strides"])}) for argument in data["arguments"])
        configs = tuple(Config(tuple(tuple(block) for block in config["blocks"]), config["num_warps"],
                               config["num_stages"]) for config in data["configs"])
        key = data["autotune_key"]
        return cls(data["module"], data["kernel"], arguments, configs, tuple(tuple(grid) for grid in data["grids"]),
                   tuple(key) if key is not None else None, data["total_configs"])


def _tuple(value):
    return tuple(value) if value is not None else None


# ------------------------------------------------------------------------------------------------ specialization

@functools.lru_cache(maxsize=None)
def _pointer_kind(dtype) -> str:
    """Triton's signature type for a pointer to ``dtype`` (``*fp32``, ``*bf16``, ``*i64``, ...)."""
    import torch
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    return native_specialize_impl(BaseBackend, torch.empty(0, dtype=dtype), False, True, True)[0]


def specialize(value, *, constexpr: bool = False, specialize_value: bool = True, align: bool = True):
    """``(kind, divisible_by_16, value)`` for one argument, as Triton's launcher specializes it. Scalars go through
    Triton's own specializer; a tensor's alignment is its storage offset's (meta tensors have no address, and a torch
    allocation starts 16-byte aligned)."""
    import torch

    if constexpr:
        return "constexpr", False, value
    if isinstance(value, torch.Tensor):
        divisible = align and (value.storage_offset() * value.element_size()) % 16 == 0
        return _pointer_kind(value.dtype), divisible, None
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kind, attribute = native_specialize_impl(BaseBackend, value, False, specialize_value, align)
    if kind == "constexpr":
        return kind, False, attribute
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return kind, attribute == "D", value
    return kind, False, value


def _describe(name: str, value, parameter) -> Argument:
    import torch

    kind, divisible, constant = specialize(value, constexpr=parameter.is_constexpr,
                                           specialize_value=not parameter.do_not_specialize,
                                           align=not parameter.do_not_specialize_on_alignment)
    if kind == "constexpr" and not _plain(constant):
        constant = _encode_constant(constant)
    if isinstance(value, torch.Tensor):
        return Argument(name, kind, divisible, None, tuple(value.shape), tuple(value.stride()), value.element_size())
    return Argument(name, kind, divisible, constant, specialized=not parameter.do_not_specialize)


def _encode_constant(value):
    """A JSON form of a constexpr that is not a plain value: Triton dtypes as ``["dtype", "fp32"]``."""
    import triton.language as tl

    if isinstance(value, tl.dtype):
        return ["dtype", value.name]
    raise TypeError(f"cannot record a constexpr of type {type(value).__name__}: {value!r}")


def decode_constant(value):
    """The constexpr value of :func:`_encode_constant`'s form (plain values unchanged)."""
    import triton.language as tl

    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == "dtype":
        return tl.dtype(value[1])
    return value


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


# ------------------------------------------------------------------------------------------------ recording

def _layers(kernel) -> tuple[Any, Any, list]:
    """``(autotuner or None, jit function, heuristics wrappers outermost first)`` of a launched kernel object."""
    from triton.runtime.autotuner import Autotuner, Heuristics

    tuner, heuristics = None, []
    while hasattr(kernel, "fn"):
        if isinstance(kernel, Autotuner):
            tuner = kernel
        elif isinstance(kernel, Heuristics):
            heuristics.append(kernel)
        else:
            break
        kernel = kernel.fn
    return tuner, kernel, heuristics


def _surviving_configs(tuner, named_args: dict, launch_kwargs: dict) -> list:
    if tuner is None:
        return [None]
    configs = list(tuner.configs)
    if len(configs) > 1 and tuner.early_config_prune is not None:
        configs = list(tuner.early_config_prune(configs, named_args, **launch_kwargs))
    return configs


def _autotune_key(tuner, named_args: dict) -> tuple | None:
    """The autotuner's cache key: the key arguments' values, then every tensor argument's dtype (as triton does)."""
    if tuner is None or len(tuner.configs) == 1:
        return None
    key = [_key_value(named_args[name]) for name in tuner.keys if name in named_args]
    key += [str(value.dtype) for value in named_args.values() if hasattr(value, "dtype")]
    return tuple(key)


def _key_value(value):
    return value if _plain(value) else repr(value)


def _grid(grid, meta: dict) -> tuple[int, int, int]:
    sizes = grid(meta) if callable(grid) else grid
    sizes = tuple(int(size) for size in sizes)
    return (sizes + (1, 1, 1))[:3]


def record_launch(kernel, grid, args: tuple, kwargs: dict) -> Launch:
    """The :class:`Launch` of ``kernel[grid](*args, **kwargs)`` on the recording's architecture."""
    tuner, function, heuristics = _layers(kernel)
    parameters = function.params
    names = [parameter.name for parameter in parameters]
    if len(args) > len(names):
        raise TypeError(f"{function.__name__} takes {len(names)} arguments, launched with {len(args)}")
    named_args = dict(zip(names, args))
    launch_options = {name: kwargs[name] for name in LAUNCH_OPTIONS if name in kwargs}
    launch_kwargs = {name: value for name, value in kwargs.items() if name not in LAUNCH_OPTIONS}
    survivors = _surviving_configs(tuner, named_args, launch_kwargs)
    configs, grids, arguments = [], [], None
    for config in survivors:
        values = {**named_args, **launch_kwargs, **(config.all_kwargs() if config is not None else {})}
        for wrapper in heuristics:
            for name, heuristic in wrapper.values.items():
                values[name] = heuristic(values)
        missing = [name for name in names if name not in values]
        if missing:
            raise TypeError(f"{function.__name__} launched without {', '.join(missing)}")
        blocks = tuple((name, config.kwargs[name]) for name in config.kwargs) if config is not None else ()
        warps = config.num_warps if config is not None else launch_options.get("num_warps", DEFAULT_WARPS)
        stages = config.num_stages if config is not None else launch_options.get("num_stages", DEFAULT_STAGES)
        configs.append(Config(blocks, warps, stages))
        grids.append(_grid(grid, values))
        if arguments is None:
            arguments = tuple(_describe(name, values[name], parameter) for name, parameter in zip(names, parameters))
    return Launch(function.fn.__module__, function.__name__, arguments, tuple(configs), tuple(grids),
                  _autotune_key(tuner, {**named_args, **launch_kwargs}),
                  len(tuner.configs) if tuner is not None else 1)


class LaunchRecorder(contextlib.AbstractContextManager):
    """Records every ``kernel[grid](...)`` made inside the ``with`` block (in a ``TRITON_INTERPRET=0`` process).

    ``architecture`` (80 or 90) is the GPU the recording stands in for: autotune pruning sees its shared-memory
    limit, and :func:`kernels.runtime.multiprocessor_count` its SM count. ``execute=False`` (a dry run) skips the
    launches: use meta tensors. ``execute=True`` launches them too (on a real GPU)."""

    def __init__(self, architecture: int = 90, *, execute: bool = False):
        from kernels import runtime

        if architecture not in runtime.ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(runtime.ARCHITECTURES)}, got {architecture!r}")
        if runtime.INTERPRET:
            raise RuntimeError("recording launches needs GPU launch paths: run it with TRITON_INTERPRET=0 "
                               "(kernels.launches.record_steps starts such a process)")
        self.architecture = runtime.ARCHITECTURES[architecture]
        self.execute = execute
        self.launches: list[Launch] = []
        self._exit_stack = contextlib.ExitStack()

    def __enter__(self) -> LaunchRecorder:
        from triton.runtime.jit import KernelInterface

        from kernels import runtime

        recorder = self
        original_getitem = KernelInterface.__getitem__

        def recording_getitem(kernel, grid):
            def launch(*args, **kwargs):
                recorder.launches.append(record_launch(kernel, grid, args, kwargs))
                if recorder.execute:
                    return original_getitem(kernel, grid)(*args, **kwargs)
                return None

            return launch

        KernelInterface.__getitem__ = recording_getitem
        runtime.set_recording_architecture(self.architecture)
        self._exit_stack.callback(setattr, KernelInterface, "__getitem__", original_getitem)
        self._exit_stack.callback(runtime.set_recording_architecture, None)
        return self

    def __exit__(self, *exc_info) -> None:
        self._exit_stack.close()


# ------------------------------------------------------------------------------------------------ training steps

@dataclasses.dataclass(frozen=True)
class Step:
    """One training step to record: forward, cross-entropy loss, backward (no optimizer: SGD runs in torch)."""

    model: str  # a tritonnet.models name: "alexnet", "alexnet-small", ...
    batch: int
    dtype: str  # "fp32", "bf16", "fp16"
    channels_last: bool = False
    architecture: int = 90
    tf32: bool = False  # fp32 GEMMs on TF32 tensor cores (torch.set_float32_matmul_precision("high"))

    @property
    def label(self) -> str:
        layout = "channels-last" if self.channels_last else "contiguous"
        precision = " tf32" if self.tf32 and self.dtype == "fp32" else ""
        return f"{self.model} batch {self.batch} {self.dtype}{precision} {layout} sm_{self.architecture}"


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def record_training_step(step: Step) -> list[Launch]:
    """Record one training step of ``step.model`` on meta tensors (call in a ``TRITON_INTERPRET=0`` process)."""
    import torch

    from tritonnet.models import MODELS, create_model

    if step.model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {step.model!r}")
    if step.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {step.dtype!r}")
    dtype = getattr(torch, DTYPES[step.dtype])
    memory_format = torch.channels_last if step.channels_last else torch.contiguous_format
    num_classes = 1000 if step.model != "alexnet-small" else 10
    with torch.device("meta"):
        model = create_model(step.model, num_classes).to(dtype=dtype, memory_format=memory_format)
        side = model.input_size
        images = torch.empty(step.batch, 3, side, side, dtype=dtype).contiguous(memory_format=memory_format)
        labels = torch.empty(step.batch, dtype=torch.int64)
    model.train()
    precision = torch.get_float32_matmul_precision()
    torch.manual_seed(0)  # the same dropout seeds in every recording
    torch.set_float32_matmul_precision("high" if step.tf32 else "highest")
    try:
        with LaunchRecorder(step.architecture) as recorder:
            loss = _loss(model(images), labels)
            loss.backward()
    finally:
        torch.set_float32_matmul_precision(precision)
    return recorder.launches


def _loss(logits, labels):
    """The model's training loss, as tritonnet.functional.cross_entropy computes it with the Triton kernels. Its
    argument checks read the targets on the host, which meta tensors cannot: the recording calls the provider the
    checks dispatch to (the same kernels, with no class weights, torch's default ignore_index, mean reduction, no
    smoothing)."""
    from tritonnet.registry import lookup

    return lookup("cross_entropy", "triton")(logits, labels, None, -100, "mean", 0.0)


def _worker_main(argv: list[str]) -> None:
    """Subprocess entry: ``python -m kernels.launches STEPS_JSON OUT_JSON``."""
    with open(argv[0]) as handle:
        steps = [Step(**fields) for fields in json.load(handle)]
    recorded = [[launch.to_json() for launch in record_training_step(step)] for step in steps]
    with open(argv[1], "w") as handle:
        json.dump(recorded, handle)


def gpu_mode_environment() -> dict:
    """The environment of a child process that records or compiles GPU launches on this machine."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = dict(os.environ, TRITON_INTERPRET="0")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH")]))
    return environment


def record_steps(steps: list[Step]) -> dict[Step, list[Launch]]:
    """The launches of each training step, recorded in one ``TRITON_INTERPRET=0`` subprocess (works from any
    process, the interpreter-mode test suite included)."""
    if not steps:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        steps_path, out_path = os.path.join(folder, "steps.json"), os.path.join(folder, "launches.json")
        with open(steps_path, "w") as handle:
            json.dump([dataclasses.asdict(step) for step in steps], handle)
        done = subprocess.run([sys.executable, "-m", "kernels.launches", steps_path, out_path],
                              env=gpu_mode_environment(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"recording {', '.join(step.label for step in steps)} failed:\n"
                               f"{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
        with open(out_path) as handle:
            recorded = json.load(handle)
    return {step: [Launch.from_json(launch) for launch in launches] for step, launches in zip(steps, recorded)}


def distinct(launches: list[Launch]) -> Iterator[tuple[Launch, Config]]:
    """Each distinct compiled kernel of ``launches``: every surviving config of every launch, once per
    specialization (the launch that first needed it)."""
    seen = set()
    for launch in launches:
        for config in launch.configs:
            signature = launch.specialization(config)
            if signature not in seen:
                seen.add(signature)
                yield launch, config


def kernel_object(launch: Launch):
    """The launched kernel object (autotuner, heuristics or jit function) of a recorded launch."""
    return getattr(importlib.import_module(launch.module), launch.kernel)


if __name__ == "__main__":
    from kernels import runtime

    if runtime.INTERPRET:
        raise SystemExit("kernels.launches records GPU launches: run it with TRITON_INTERPRET=0")
    _worker_main(sys.argv[1:])
