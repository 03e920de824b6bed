"""Per-layer profiler: every tritonnet layer of a model (and the loss), forward and backward, with each kernel
provider side by side.

    python -m tritonnet.profile --model alexnet --batch-size 128                      # GPU
    python -m tritonnet.profile --model alexnet-small --batch-size 2 --providers triton,torch --json rows.json

How the numbers are made, so they can be trusted:

- One forward pass of the whole model (in training mode, with the configured kernels) captures each layer's real
  input with forward hooks. Each layer is then timed *in isolation* on that input, once per provider, the provider
  forced on the layer itself (so a per-layer ``provider=`` cannot hide it).
- Forward: the layer's call, with autograd recording as in training (the input requires grad exactly when it did
  in the model's pass; the first layer's images do not).
- Backward: that layer's backward only, right after (and timed apart from) the forward that built its graph:
  ``torch.autograd.grad(output, [input, *parameters], grad_output)``, with one saved random ``grad_output`` per
  layer (ones for the scalar loss) shared by every provider.
- Warm-up calls (compilation, autotuning, allocator growth) are excluded; the median of ``repeats`` runs is
  reported. Each forward and each backward is timed on its own by :func:`tritonnet.timing.measure_stages_ms`
  (CUDA events after a synchronize on a GPU, so launch overhead counts; ``time.perf_counter`` on the CPU).
- A layer's share is its forward + backward over the sum of that provider's layers. A whole training step (model,
  loss, parameter gradients) is also measured end to end per provider; the gap to the sum of the layers is
  everything between them (flatten, average pool, autograd's bookkeeping).
- Providers default to every provider in the registry (``available_kernels``): a new one is profiled with no new
  code. A layer whose op lacks a provider shows n/a for it. Speed-ups are the ``"torch"`` reference's time over
  the provider's (above 1: faster than the reference).

In Triton's interpreter (no GPU) the Triton times are numpy emulation: they check that the profiler runs, not
how fast the kernels are.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from tritonnet.kernels.runtime import INTERPRET
from tritonnet.cli import add_kernels_argument, describe_kernels, model_name
from tritonnet.nn import CrossEntropyLoss
from tritonnet.registry import REFERENCE_PROVIDER, available_kernels, provider_for, provider_order, use_kernels
from tritonnet.timing import DTYPES, ON_GPU, measure_stages_ms

STEP = "step"


@dataclasses.dataclass
class LayerTiming:
    """One layer (or the whole step, ``kind == "step"``) timed with one provider. Times are medians in ms; None
    where the layer's op has no such provider, or nothing in the layer needs a gradient."""

    layer: str  # the module's name, qualified ("features.0") only where the short name is ambiguous
    kind: str  # the op and its fusions ("conv2d+relu", "linear+relu+dropout", "cross_entropy"), or "step"
    shape: list[int]  # the layer's input shape (the images' for the step)
    provider: str
    forward_ms: float | None
    backward_ms: float | None
    share: float | None = None  # (forward + backward) / the sum over this provider's layers; None for the step
    forward_speedup: float | None = None  # the reference provider's forward_ms / this one's
    backward_speedup: float | None = None
    configured: bool = False  # whether ``provider`` is the one this layer uses with the current choices
    uses: str = ""  # the provider this layer uses with the current choices (provider=, --kernels, env)
    module: str = ""  # the module's qualified name in the model ("" for the loss and the step)
    output_shape: list[int] = dataclasses.field(default_factory=list)
    dtype: str = ""
    device: str = ""
    repeats: int = 0

    @property
    def total_ms(self) -> float | None:
        if self.forward_ms is None:
            return None
        return self.forward_ms + (self.backward_ms or 0.0)


@dataclasses.dataclass
class _CapturedLayer:
    name: str
    module_name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]  # detached copies of the real inputs; the first is differentiated
    input_requires_grad: bool
    output_shape: list[int]


def all_providers() -> list[str]:
    """Every provider some op has, in the registry's order (:func:`tritonnet.registry.provider_order`)."""
    return sorted({provider for providers in available_kernels().values() for provider in providers},
                  key=provider_order)


def check_providers(providers: Sequence[str]) -> list[str]:
    known = all_providers()
    for provider in providers:
        if provider not in known:
            raise ValueError(f"unknown provider {provider!r}; providers are: {', '.join(known)}")
    if not providers:
        raise ValueError("providers is empty; name at least one provider")
    return list(dict.fromkeys(providers))


def _kind(module: nn.Module) -> str:
    fusions = ["relu"] if getattr(module, "relu", False) else []
    if isinstance(getattr(module, "dropout", None), float) and module.dropout > 0:
        fusions.append("dropout")
    return "+".join([module.op, *fusions])


def _profiled_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every tritonnet layer: the modules that dispatch through the registry."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(getattr(module, "op", None), str) and hasattr(module, "provider")]


def _short_names(qualified: list[str]) -> dict[str, str]:
    last = [name.rpartition(".")[2] for name in qualified]
    return {name: short if last.count(short) == 1 else name for name, short in zip(qualified, last)}


def capture_layer_inputs(model: nn.Module, images: torch.Tensor) -> tuple[list[_CapturedLayer], torch.Tensor]:
    """Run ``model(images)`` once with forward hooks on every tritonnet layer; return each call's real input (in
    call order) and the logits."""
    layers = _profiled_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no tritonnet layers to profile")
    names = _short_names([name for name, _ in layers])
    captured: list[_CapturedLayer] = []
    calls: dict[str, int] = {}

    def hook_for(module_name: str):
        def hook(module, args, output):
            calls[module_name] = calls.get(module_name, 0) + 1
            name = names[module_name] + (f"#{calls[module_name]}" if calls[module_name] > 1 else "")
            output_tensor = output[0] if isinstance(output, tuple) else output
            captured.append(_CapturedLayer(name, module_name, module, tuple(arg.detach() for arg in args),
                                           bool(args[0].requires_grad), list(output_tensor.shape)))
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers]
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return captured, logits.detach()


@contextlib.contextmanager
def _forced(modules: Sequence[nn.Module], provider: str | None) -> Iterator[None]:
    """Force ``provider`` on each module whose op has it (None: leave every module as configured)."""
    saved = [(module, module.provider) for module in modules]
    try:
        if provider is not None:
            for module in modules:
                if provider in available_kernels()[module.op]:
                    module.provider = provider
        yield
    finally:
        for module, previous in saved:
            module.provider = previous


def _time_layer(layer: _CapturedLayer, grad_output: torch.Tensor, *, device: torch.device, repeats: int,
                warmup: int) -> tuple[float, float | None]:
    """(forward ms, backward ms) of one layer on its captured input, with the provider already forced on it."""
    module = layer.module
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    needs_backward = layer.input_requires_grad or bool(parameters)
    in_place = bool(getattr(module, "inplace", False))

    def fresh_inputs() -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The module's arguments and the leaf to differentiate; an in-place layer gets a copy (untimed), as in the
        model it writes into a non-leaf activation."""
        leaf = layer.inputs[0].detach().requires_grad_(layer.input_requires_grad)
        first = leaf.clone() if in_place else leaf
        return (first, *layer.inputs[1:]), leaf

    def forward(state):
        inputs, leaf = state
        return module(*inputs), ([leaf] if layer.input_requires_grad else []) + parameters

    def backward(state):
        output, differentiated = state
        torch.autograd.grad(output, differentiated, grad_output)

    stages = [forward, backward] if needs_backward else [forward]
    times = measure_stages_ms(stages, device=device, repeats=repeats, warmup=warmup, prepare=fresh_inputs)
    return times[0], times[1] if needs_backward else None


def _time_step(model: nn.Module, loss: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
               device: torch.device, repeats: int, warmup: int) -> tuple[float, float]:
    """(forward ms, backward ms) of a whole training step: model and loss forward, then the gradients of every
    parameter."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]

    def forward(_):
        return loss(model(images), targets)

    def backward(value):
        torch.autograd.grad(value, parameters)

    forward_ms, backward_ms = measure_stages_ms([forward, backward], device=device, repeats=repeats, warmup=warmup)
    return forward_ms, backward_ms


def _default_counts(device: torch.device) -> tuple[int, int]:
    return (20, 5) if device.type == "cuda" else (3, 1)


def profile_model(model: nn.Module, input: torch.Tensor | Sequence[int] | int, providers: Sequence[str] | None = None,
                  *, target: torch.Tensor | None = None, loss: nn.Module | None = None, repeats: int | None = None,
                  warmup: int | None = None, whole_step: bool = True, seed: int = 0) -> list[LayerTiming]:
    """Time every tritonnet layer of ``model`` and the loss, forward and backward, with each of ``providers``
    (default: every provider in the registry). See the module docstring for the method.

    ``input`` is a batch of images, a shape, or a batch size (square images of ``model.input_size``, 3 channels),
    on the device and in the dtype of the model's parameters. ``target`` defaults to random class indices; ``loss``
    to tritonnet's ``CrossEntropyLoss``. The model is profiled in its current mode (``model.train()`` for a training
    step). ``repeats`` and ``warmup`` default to 20 and 5 on a GPU, 3 and 1 on the CPU.

    Returns rows grouped by layer in call order (the loss last), one per provider; with ``whole_step``, then one
    ``kind == "step"`` row per provider (plus ``provider == "configured"`` when the current choices mix providers).
    """
    providers = check_providers(all_providers() if providers is None else list(providers))
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    default_repeats, default_warmup = _default_counts(device)
    repeats = default_repeats if repeats is None else repeats
    warmup = default_warmup if warmup is None else warmup
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if isinstance(input, int):
        input = (input, 3, model.input_size, model.input_size)
    if not isinstance(input, torch.Tensor):
        input = torch.randn(tuple(input), generator=generator, dtype=torch.float32).to(device, dtype)
    images = input.to(device, dtype)
    loss = CrossEntropyLoss() if loss is None else loss

    captured, logits = capture_layer_inputs(model, images)
    if logits.dim() != 2 and (target is None or isinstance(loss, CrossEntropyLoss)):
        raise ValueError(f"the model's output has shape {tuple(logits.shape)}, not (N, classes): pass loss= and "
                         f"target= that fit it")
    if target is None:
        target = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=generator).to(device)
    captured.append(_CapturedLayer("loss", "", loss, (logits, target), True, []))
    loss_output = loss(logits, target)
    captured[-1].output_shape = list(loss_output.shape)

    rows: list[LayerTiming] = []
    common = {"dtype": str(dtype).replace("torch.", ""), "device": str(device), "repeats": repeats}
    for layer in captured:
        if layer.name == "loss":
            grad_output = torch.ones_like(loss_output)
        else:
            grad_output = torch.randn(layer.output_shape, generator=generator).to(device, dtype)
        configured = provider_for(layer.module.op, layer.module.provider)
        for provider in providers:
            forward_ms = backward_ms = None
            if provider in available_kernels()[layer.module.op]:
                with _forced([layer.module], provider):
                    forward_ms, backward_ms = _time_layer(layer, grad_output, device=device, repeats=repeats,
                                                          warmup=warmup)
            rows.append(LayerTiming(layer.name, _kind(layer.module), list(layer.inputs[0].shape), provider,
                                    forward_ms, backward_ms, configured=provider == configured, uses=configured,
                                    module=layer.module_name, output_shape=layer.output_shape, **common))
    _add_shares_and_speedups(rows)

    if whole_step:
        modules = [layer.module for layer in captured]
        configured_choice = [provider_for(module.op, module.provider) for module in modules]

        def forced_choice(provider: str) -> list[str]:  # what _forced(modules, provider) runs
            return [provider if provider in available_kernels()[module.op] else choice
                    for module, choice in zip(modules, configured_choice)]

        step_providers: list[str | None] = list(providers)
        # The configured mix is a step of its own only when it mixes providers (else it is one of the forced steps,
        # or a provider the caller left out on purpose, which is not run).
        mixed = len(set(configured_choice)) > 1
        if mixed and all(forced_choice(provider) != configured_choice for provider in providers):
            step_providers.append(None)
        for provider in step_providers:
            with _forced(modules, provider):
                forward_ms, backward_ms = _time_step(model, loss, images, target, device=device, repeats=repeats,
                                                     warmup=warmup)
            rows.append(LayerTiming(STEP, STEP, list(images.shape), provider or "configured", forward_ms, backward_ms,
                                    configured=provider is None or forced_choice(provider) == configured_choice,
                                    output_shape=list(loss_output.shape), **common))
        _add_shares_and_speedups(rows)
    return rows


@contextlib.contextmanager
def label_layers(model: nn.Module) -> Iterator[None]:
    """Label every tritonnet layer's forward in ``torch.profiler`` traces with its name in the model, its op and the
    provider it uses now (``features.conv2 conv2d+relu [triton]``), through ``record_function`` ranges opened and
    closed by forward hooks. Backward work appears under autograd's own node names."""
    layers = _profiled_layers(model)
    open_ranges: list = []

    def pre_hook_for(name: str):
        def pre_hook(module, args):
            label = f"{name} {_kind(module)} [{provider_for(module.op, module.provider)}]"
            labelled = torch.autograd.profiler.record_function(label)
            labelled.__enter__()
            open_ranges.append(labelled)
        return pre_hook

    def hook(module, args, output):
        open_ranges.pop().__exit__(None, None, None)

    handles = []
    for name, module in layers:
        handles.append(module.register_forward_pre_hook(pre_hook_for(name)))
        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        while open_ranges:  # a forward that raised
            open_ranges.pop().__exit__(None, None, None)


def write_trace(model: nn.Module, batch: int, path: str, *, steps: int = 3, seed: int = 0) -> None:
    """A Chrome trace (``chrome://tracing``, Perfetto) of ``steps`` training steps (forward, loss, backward) of
    ``model`` with the kernels as configured, after one untimed step; layers labelled by :func:`label_layers`."""
    parameter = next(model.parameters())
    generator = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randn(batch, 3, model.input_size, model.input_size, generator=generator).to(parameter.device,
                                                                                                 parameter.dtype)
    loss = CrossEntropyLoss()

    def step():
        logits = model(images)
        target = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=generator).to(logits.device)
        with torch.autograd.profiler.record_function(f"loss {_kind(loss)} [{provider_for(loss.op, None)}]"):
            value = loss(logits, target)
        value.backward()

    step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if parameter.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with label_layers(model), torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        if parameter.device.type == "cuda":
            torch.cuda.synchronize(parameter.device)
    profiler.export_chrome_trace(path)


def _add_shares_and_speedups(rows: list[LayerTiming]) -> None:
    layer_rows = [row for row in rows if row.kind != STEP]
    totals: dict[str, float] = {}
    for row in layer_rows:
        totals[row.provider] = totals.get(row.provider, 0.0) + (row.total_ms or 0.0)
    reference = {(row.layer, row.kind == STEP): row for row in rows if row.provider == REFERENCE_PROVIDER}
    for row in rows:
        if row.kind != STEP and row.total_ms is not None and totals[row.provider] > 0:
            row.share = row.total_ms / totals[row.provider]
        base = reference.get((row.layer, row.kind == STEP))
        if base is None or row.provider == REFERENCE_PROVIDER:
            continue
        if base.forward_ms is not None and row.forward_ms:
            row.forward_speedup = base.forward_ms / row.forward_ms
        if base.backward_ms is not None and row.backward_ms:
            row.backward_speedup = base.backward_ms / row.backward_ms


def _milliseconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def table(rows: list[LayerTiming], title: str = "per-layer profile"):
    """A rich Table: one line per layer, per provider forward ms, backward ms and share; speed-ups against the
    reference; the sums and the measured whole step at the bottom."""
    from rich.table import Table

    providers = list(dict.fromkeys(row.provider for row in rows if row.kind != STEP))
    compared = [provider for provider in providers if provider != REFERENCE_PROVIDER] \
        if REFERENCE_PROVIDER in providers else []
    by_layer: dict[str, dict[str, LayerTiming]] = {}
    for row in rows:
        if row.kind != STEP:
            by_layer.setdefault(row.layer, {})[row.provider] = row
    result = Table(title=title, caption=f"ms: median per call; share: of the provider's sum of layers; speed-up: "
                                        f"{REFERENCE_PROVIDER} / provider (> 1 is faster); uses: the provider chosen "
                                        f"now (provider=, --kernels, TRITONNET_KERNELS)")
    for header in ("layer", "kind", "input shape"):
        result.add_column(header, no_wrap=True)
    for provider in providers:
        for header in ("fwd ms", "bwd ms", "share"):
            result.add_column(f"{provider}\n{header}", justify="right")
    for provider in compared:
        result.add_column(f"{provider}\nspeed-up fwd", justify="right")
        result.add_column(f"{provider}\nspeed-up bwd", justify="right")
    result.add_column("uses")
    for layer, cells in by_layer.items():
        first = next(iter(cells.values()))
        values = [layer, first.kind, "x".join(map(str, first.shape))]
        for provider in providers:
            row = cells.get(provider)
            values += [_milliseconds(row.forward_ms), _milliseconds(row.backward_ms), _percent(row.share)] \
                if row else ["n/a", "n/a", ""]
        for provider in compared:
            row = cells.get(provider)
            values += [_ratio(row.forward_speedup), _ratio(row.backward_speedup)] if row else ["", ""]
        values.append(first.uses)
        result.add_row(*values)

    def summary(label: str, pick: Callable[[str], LayerTiming | None], speedups: bool, end_section: bool = False):
        values = [label, "", ""]
        for provider in providers:
            row = pick(provider)
            values += [_milliseconds(row.forward_ms), _milliseconds(row.backward_ms), ""] if row else ["", "", ""]
        for provider in compared:
            row = pick(provider)
            values += [_ratio(row.forward_speedup), _ratio(row.backward_speedup)] if row and speedups else ["", ""]
        result.add_row(*values, "", end_section=end_section)

    sums, partial = {}, []
    for provider in providers:
        timed = [cells for cells in by_layer.values() if provider in cells and cells[provider].forward_ms is not None]
        if len(timed) < len(by_layer):
            partial.append(provider)
        total = sums[provider] = LayerTiming("sum", "sum", [], provider,
                                             sum(cells[provider].forward_ms for cells in timed),
                                             sum(cells[provider].backward_ms or 0.0 for cells in timed))
        reference = [cells.get(REFERENCE_PROVIDER) for cells in timed]
        if provider != REFERENCE_PROVIDER and all(row is not None and row.forward_ms is not None for row in reference):
            # Against the reference's sum over the same layers, so a provider missing a layer is not flattered.
            reference_forward = sum(row.forward_ms for row in reference)
            reference_backward = sum(row.backward_ms or 0.0 for row in reference)
            total.forward_speedup = reference_forward / total.forward_ms if total.forward_ms else None
            total.backward_speedup = reference_backward / total.backward_ms if total.backward_ms else None
    if partial:
        result.caption += (f". Sums for {', '.join(partial)} leave out the layers it has no kernel for (n/a); their "
                           f"speed-ups compare the same layers")
    result.rows[-1].end_section = True
    summary("sum of layers", sums.get, True)
    steps = {row.provider: row for row in rows if row.kind == STEP}
    if steps:
        summary("whole step (measured)", steps.get, True)
        if "configured" in steps:
            configured = steps["configured"]
            result.add_row("whole step, as configured (fwd + bwd)", "", "",
                           *[""] * (3 * len(providers) + 2 * len(compared)),
                           f"{_milliseconds(configured.forward_ms)} + {_milliseconds(configured.backward_ms)} ms")
    return result


def _parse_providers(text: str) -> list[str]:
    try:
        return check_providers([name.strip() for name in text.split(",") if name.strip()])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    from tritonnet.models import MODELS

    gpu = ON_GPU
    parser = argparse.ArgumentParser(prog="python -m tritonnet.profile", description=__doc__.split("\n\n")[0])
    default_model, default_batch = ("alexnet", 128) if gpu else ("alexnet-small", 2)
    parser.add_argument("--model", type=model_name, choices=list(MODELS), default=default_model,
                        help=f"the Python names (alexnet_small) work too (default: {default_model})")
    parser.add_argument("--batch-size", type=int, default=default_batch, help=f"default: {default_batch}")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the model's own")
    parser.add_argument("--providers", type=_parse_providers, default=None, metavar="NAME[,NAME...]",
                        help=f"providers to compare (default: every one registered: {','.join(all_providers())})")
    add_kernels_argument(parser)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement, of which the median is reported (default: 20 on a GPU, 3 "
                             "on the CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 5 on a GPU, 1 on "
                                                                  "the CPU)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="default: fp32")
    parser.add_argument("--device", default="cuda" if gpu else "cpu",
                        help=f"where the model runs (default: {'cuda' if gpu else 'cpu'})")
    parser.add_argument("--eval", action="store_true", help="profile in eval mode (no dropout) instead of training")
    parser.add_argument("--no-step", action="store_true", help="skip the whole-step measurements")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the weights, the images, the targets and the output gradients (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's CPU threads (default: torch's own; on a busy machine 1 gives steadier CPU times)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the rows as a JSON list")
    parser.add_argument("--trace", metavar="PATH", default=None,
                        help="also write a Chrome trace (torch.profiler) of 3 training steps with the kernels as "
                             "configured, each layer labelled with its name, op and provider")
    return parser


def main(argv: Sequence[str] | None = None) -> list[LayerTiming]:
    from rich.console import Console

    from tritonnet.models import MODELS

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    for flag in ("repeats", "warmup"):
        value = getattr(args, flag)
        if value is not None and value < (1 if flag == "repeats" else 0):
            parser.error(f"--{flag} must be >= {1 if flag == 'repeats' else 0}, got {value}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    extra = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = MODELS[args.model](**extra)
    model = model.to(device, DTYPES[args.dtype]).train(not args.eval)

    console = Console() if sys.stdout.isatty() else Console(width=200)  # a log file gets the whole table
    with use_kernels(**args.kernels):
        where = "Triton interpreter on the CPU: Triton times are numpy emulation" if INTERPRET else str(device)
        console.print(f"[bold]{args.model}[/bold], batch {args.batch_size}, {args.dtype}, "
                      f"{'eval' if args.eval else 'training'} mode, {where}")
        console.print(f"kernels as configured: {describe_kernels()}")
        rows = profile_model(model, args.batch_size, args.providers, repeats=args.repeats, warmup=args.warmup,
                             whole_step=not args.no_step, seed=args.seed)
    repeats = rows[0].repeats
    console.print(table(rows, title=f"{args.model} per-layer profile (median of {repeats})"))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([dataclasses.asdict(row) for row in rows], handle, indent=1)
        console.print(f"wrote {len(rows)} rows to {args.json}")
    if args.trace:
        with use_kernels(**args.kernels):
            write_trace(model, args.batch_size, args.trace, seed=args.seed)
        console.print(f"wrote a Chrome trace of 3 training steps to {args.trace}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
