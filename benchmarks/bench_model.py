"""Time whole AlexNet training steps: tritonnet against the same net in plain PyTorch, eager and torch.compile'd.

    python benchmarks/bench_model.py [--models alexnet alexnet-torchvision] [--dtypes bf16 fp32] [--batch-size 128]
                                     [--json results/model.json]
    python benchmarks/bench_model.py --smoke      # alexnet-small, batch 2, through the interpreter on a CPU

A step is what training does: zero the gradients, forward, cross-entropy loss, backward, SGD (lr 0.01, momentum
0.9, weight decay 5e-4; torch.optim.SGD for every provider). Inputs are synthetic (random images and labels,
the same for every provider), so no data loading is timed.

Providers (one row each):
- ``tritonnet``: the model from ``tritonnet.models``, its kernels chosen by the registry (the default providers:
  Triton where registered; ``--kernels op=provider,...`` overrides, as in the examples), and tritonnet's loss.
- ``torch``: ``tritonnet.nn.to_torch(model)``: the same layers, weights and fusion boundaries from plain
  ``torch.nn`` (cuDNN, cuBLAS), in eager mode; ``torch.nn.CrossEntropyLoss``. The ratios' baseline.
- ``torch.compile``: ``torch.compile`` of that plain model (Inductor compiles forward and backward; the optimizer
  step stays eager, as for the others).
- ``torch.compile(tritonnet)``: ``torch.compile`` of tritonnet's model. Its registered ops (``torch.ops.tritonnet.*``)
  stay calls of the same Triton kernels inside the compiled forward and backward graphs; Inductor compiles what lies
  between them (autocast's casts, the flatten) and removes the modules' Python overhead. The loss and the optimizer
  step stay eager, as for the others.

bf16 means the model and the inputs are cast to bf16 (``model.to(torch.bfloat16)``): every provider then runs the
same bf16 layers with fp32 accumulation inside the kernels. (Pure bf16 weights are not a training recipe, which keeps
fp32 master weights; the step's work is what is measured here.) ``--autocast`` measures the recipe instead: fp32
weights and images, forward and loss under ``torch.autocast`` in bf16. tritonnet's conv2d and linear cast their
operands as torch's do, and its LRN returns the dtype torch's returns (tritonnet/ops/_precision.py).

Reported: median step time (and 20/80 percentiles), images/s = batch / median time, peak memory
(``torch.cuda.max_memory_allocated`` over steps after the warm-up: weights, gradients, momentum and activations),
and the first step's loss (the same weights and images for every provider, so these should agree closely).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

import tritonnet
import tritonnet.nn
from benchmarks import harness
from benchmarks.harness import COMPILED, EAGER, check_minimum
from tritonnet import cli
from tritonnet.models import MODELS, create_model

OURS = "tritonnet"
OURS_COMPILED = "torch.compile(tritonnet)"
PROVIDERS = (OURS, OURS_COMPILED, EAGER, COMPILED)
NUM_CLASSES = {"alexnet": 1000, "alexnet-torchvision": 1000, "alexnet-small": 10}


def build(model_name: str, provider: str, dtype: torch.dtype, seed: int, compile_backend: str):
    """The model, its loss and its optimizer for one provider; the same weights for every provider."""
    torch.manual_seed(seed)
    model = create_model(model_name, NUM_CLASSES[model_name])
    input_size = model.input_size
    if provider in (OURS, OURS_COMPILED):
        loss_fn = tritonnet.nn.CrossEntropyLoss()
    else:
        model = tritonnet.nn.to_torch(model)
        loss_fn = torch.nn.CrossEntropyLoss()
    model = model.to(harness.DEVICE, dtype).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    if provider in (OURS_COMPILED, COMPILED):
        torch._dynamo.reset()
        model = torch.compile(model, backend=compile_backend)
    return model, loss_fn, optimizer, input_size


def benchmark(model_name: str, dtype: torch.dtype, provider: str, args) -> dict:
    row = {"model": model_name, "provider": provider, "dtype": harness.dtype_name(dtype), "autocast": args.autocast,
           "batch": args.batch_size}
    stored = torch.float32 if args.autocast else dtype
    model, loss_fn, optimizer, input_size = build(model_name, provider, stored, args.seed, args.compile_backend)
    generator = torch.Generator().manual_seed(args.seed + 1)
    images = torch.randn(args.batch_size, 3, input_size, input_size, generator=generator).to(harness.DEVICE, stored)
    labels = torch.randint(0, NUM_CLASSES[model_name], (args.batch_size,), generator=generator).to(harness.DEVICE)

    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    first_loss: list[float] = []
    losses: list[torch.Tensor] = []

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(harness.DEVICE.type, dtype, enabled=args.autocast):
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        if not first_loss:
            first_loss.append(float(loss.detach()))
        losses[:] = [loss.detach()]  # the latest, read after timing (no sync inside the timed steps)

    torch.manual_seed(args.seed + 2)  # the same dropout draws for every provider that uses torch's generator
    for _ in range(args.warmup_steps):  # compiles, autotunes
        step()
    harness.synchronize()
    if harness.ON_GPU:
        torch.cuda.reset_peak_memory_stats()
        step()
        step()
        torch.cuda.synchronize()
        row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        row["peak_mem_mb"] = None
    timing = harness.measure(step, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, min_reps=1 if args.smoke else 3)
    row.update(first_loss=round(first_loss[0], 5), last_loss=round(float(losses[0]), 5),
               ms=harness.significant(timing.ms),
               p20=harness.significant(timing.p20), p80=harness.significant(timing.p80), timer=timing.method,
               images_per_sec=harness.significant(args.batch_size / timing.ms * 1000.0),
               parameters=sum(parameter.numel() for parameter in model.parameters()), error=None)
    return row


def evaluate_goals(rows: list[dict]):
    ours = [row for row in rows if row["provider"] == OURS and row["dtype"] == "bf16" and row.get("ms")
            and row["model"] != "alexnet-small"]
    # Every step trains on the same batch, so a working backward makes the loss fall: first over last >= 1.
    falling = [(row["first_loss"] / row["last_loss"], f"{row['model']} {row['dtype']} {row['first_loss']:.3g} -> "
                f"{row['last_loss']:.3g}") for row in rows if row["provider"] == OURS and row.get("last_loss")]
    return [check_minimum("AlexNet training step bf16 >= 1.2x eager PyTorch",
                          [(row["speedup_vs_eager"], row["model"]) for row in ours], 1.2),
            check_minimum("tritonnet's training loss falls (first / last loss > 1)", falling, 1.0 + 1e-6)]


def print_table(console, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="Training steps (forward, loss, backward, SGD)", title_justify="left")
    for column in ("model", "dtype", "batch", "provider", "images/s", "ms (p20-p80)", "x eager", "peak MB",
                   "first loss"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        dtype = f"{row['dtype']} autocast" if row["autocast"] else row["dtype"]
        if not row.get("ms"):
            table.add_row(row["model"], dtype, str(row["batch"]), row["provider"], "[red]error[/]", "", "", "", "")
            continue
        table.add_row(row["model"], dtype, str(row["batch"]), row["provider"], f"{row['images_per_sec']:,.0f}",
                      f"{row['ms']:.3f} ({row['p20']:.3f}-{row['p80']:.3f})",
                      f"{row['speedup_vs_eager']:.2f}x" if row.get("speedup_vs_eager") else "-",
                      f"{row['peak_mem_mb']:,.0f}" if row.get("peak_mem_mb") is not None else "-",
                      f"{row['first_loss']:.4f}")
    console.print(table)
    harness.print_errors(console, rows, ("model", "dtype", "provider"))


def write_chart(path: str, rows: list[dict], environment: dict) -> None:
    harness.speedup_chart(path, rows, environment, "AlexNet training steps: times faster than PyTorch eager",
                          lambda row: row["model"])


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="alexnet-small, batch 2, fp32, one step per provider: seconds on a CPU")
    parser.add_argument("--models", nargs="+", type=cli.model_name, choices=list(MODELS), default=None,
                        help="the Python names (alexnet_small) work too (default: alexnet alexnet-torchvision; "
                             "alexnet-small with --smoke)")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="default bf16 fp32 (fp32 with --smoke)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 (2 with --smoke)")
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=None,
                        help="default all (no torch.compile on a CPU unless --compile on)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="include the torch.compile providers (auto: on a GPU only)")
    parser.add_argument("--autocast", action="store_true",
                        help="fp32 weights and images, forward and loss under torch.autocast in --dtypes (bf16)")
    parser.add_argument("--compile-backend", default="inductor")
    cli.add_kernels_argument(parser)
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="untimed steps first, for compiling and autotuning (default 3; 0 with --smoke)")
    parser.add_argument("--warmup-ms", type=float, default=None, help="default 50 (0 with --smoke)")
    parser.add_argument("--rep-ms", type=float, default=None, help="default 500 (0 with --smoke)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels-last", action="store_true", help="model and images in channels-last layout")
    parser.add_argument("--no-tf32", dest="tf32", action="store_false",
                        help="fp32 matrix products in full fp32 in cuBLAS/cuDNN")
    parser.add_argument("--json", default=None, help="write the rows here, and a PNG chart beside it")
    args = parser.parse_args(argv)
    args.models = args.models or (["alexnet-small"] if args.smoke else ["alexnet", "alexnet-torchvision"])
    args.dtypes = args.dtypes or (["fp32"] if args.smoke else ["bf16", "fp32"])
    args.batch_size = args.batch_size or (2 if args.smoke else 128)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (0 if args.smoke else 3)
    args.warmup_ms = args.warmup_ms if args.warmup_ms is not None else (0.0 if args.smoke else 50.0)
    args.rep_ms = args.rep_ms if args.rep_ms is not None else (0.0 if args.smoke else 500.0)
    if args.batch_size < 1 or args.warmup_steps < 0:
        parser.error("--batch-size must be >= 1 and --warmup-steps >= 0")
    if args.autocast and "fp32" in args.dtypes:
        parser.error("--autocast runs the step in a lower precision: give --dtypes bf16")
    compile_on = args.compile == "on" or (args.compile == "auto" and harness.ON_GPU)
    args.providers = [provider for provider in (args.providers or PROVIDERS)
                      if provider not in (OURS_COMPILED, COMPILED) or compile_on]
    return args


def main(argv=None) -> int:
    args = parse_arguments(argv)
    console = harness.make_console()
    harness.fair_settings(args.tf32)
    with tritonnet.use_kernels(**args.kernels):
        kernels = {op: tritonnet.provider_for(op) for op in tritonnet.available_kernels()}
    environment = harness.environment(batch_size=args.batch_size, smoke=args.smoke, tf32=args.tf32,
                                      tritonnet_kernels=kernels)
    console.print(f"[bold]bench_model[/] on {environment['gpu']}, torch {environment['torch']}, "
                  f"triton {environment['triton']}, batch {args.batch_size}; tritonnet's kernels: "
                  + ", ".join(f"{op}={provider}" for op, provider in kernels.items()))

    rows: list[dict] = []
    interrupted = False
    try:
        for dtype_name in args.dtypes:
            for model_name in args.models:
                for provider in args.providers:
                    try:
                        with tritonnet.use_kernels(**args.kernels):
                            rows.append(benchmark(model_name, harness.DTYPES[dtype_name], provider, args))
                    except Exception as error:  # noqa: BLE001  (reported; the other providers still run)
                        rows.append({"model": model_name, "provider": provider, "dtype": dtype_name,
                                     "autocast": args.autocast, "batch": args.batch_size, "ms": None,
                                     "images_per_sec": None,
                                     "peak_mem_mb": None, "error": f"{type(error).__name__}: {str(error)[:500]}"})
                    gc.collect()
                    if harness.ON_GPU:
                        torch.cuda.empty_cache()
                    harness.case_done(console, args, environment, rows, ("model", "dtype"),
                                      f"{dtype_name} {model_name} {provider}")
    except KeyboardInterrupt:  # `timeout -s INT`: keep what was measured
        interrupted = True
        console.print("[yellow]interrupted: reporting the rows measured so far[/]")

    return harness.finish(console, args, environment, rows, ("model", "dtype"), evaluate_goals=evaluate_goals,
                          print_rows=print_table, write_chart=write_chart, interrupted=interrupted)


if __name__ == "__main__":
    sys.exit(main())
