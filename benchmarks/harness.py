"""What the benchmarks share: the device, how to time a function there, the GPU's roofline, the run's environment,
the results file, the ratios to PyTorch eager and the pass/fail table of the goals.

Timing is :mod:`tritonnet.timing` (``measure``, ``measure_alike``, ``DTYPES``, the device), shared with the
profiler; it is imported here so that every benchmark reaches it as ``harness.measure``.

Results files are JSON: ``{"environment": {...}, "rows": [...], ...}``; ``environment`` says what ran where
(GPU, driver, torch, triton, CUDA, date, command line).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Callable, Iterable

import torch

import tritonnet  # noqa: F401  (decides GPU or interpreter mode before any kernel is decorated)
from tritonnet.kernels.runtime import INTERPRET
from tritonnet.timing import DEVICE, DTYPES, ON_GPU, Timing, dtype_name, measure, measure_alike  # noqa: F401

EAGER = "torch"  # the provider every ratio is taken against: PyTorch eager, through tritonnet's "torch" reference
COMPILED = "torch.compile"  # the row name for torch.compile of the torch reference


def significant(value: float, digits: int = 5) -> float:
    """``value`` rounded to ``digits`` significant digits, for results files."""
    return float(f"{value:.{digits}g}")


def synchronize() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def fair_settings(tf32: bool) -> None:
    """The same rules for every provider: cuDNN picks its fastest algorithm per shape (Triton kernels are
    autotuned per shape too); fp32 matrix products use TF32 tensor cores in cuBLAS and cuDNN exactly when
    ``tf32`` (Triton's ``tl.dot`` uses TF32 for fp32 inputs by default). On the CPU (smoke runs), one torch thread:
    the numbers only show that everything runs, and a thread pool on a busy shared machine adds tens of ms."""
    if not ON_GPU:
        torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


# -------------------------------------------------------------------------------------------------------- roofline

@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """Datasheet peaks (dense, no sparsity). Measured ceilings are lower (benchmarks/results/NOTES.md)."""

    name: str
    tflops: dict[str, float]  # "fp32" (CUDA cores), "tf32", "fp16", "bf16" (tensor cores)
    hbm_gbps: float


_HOPPER_SXM = {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}
_HOPPER_NVL = {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5}
_AMPERE = {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0}

# First match wins; the patterns are matched against torch.cuda.get_device_name().
GPU_SPECS: list[tuple[str, GpuSpec]] = [
    (r"\bH200 NVL\b", GpuSpec("H200 NVL", _HOPPER_NVL, 4800.0)),
    (r"\bH200\b", GpuSpec("H200 SXM", _HOPPER_SXM, 4800.0)),
    (r"\bH100 NVL\b", GpuSpec("H100 NVL", _HOPPER_NVL, 3900.0)),
    (r"\bH100 PCIe\b", GpuSpec("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0}, 2000.0)),
    (r"\bH100\b", GpuSpec("H100 SXM", _HOPPER_SXM, 3350.0)),
    (r"\bA100\b.*80GB.*PCIe", GpuSpec("A100 PCIe 80GB", _AMPERE, 1935.0)),
    (r"\bA100\b.*80GB", GpuSpec("A100 SXM 80GB", _AMPERE, 2039.0)),
    (r"\bA100\b", GpuSpec("A100 40GB", _AMPERE, 1555.0)),
]


def gpu_spec(device_name: str | None) -> GpuSpec | None:
    """The datasheet peaks of a GPU named as ``torch.cuda.get_device_name()`` names it; None if unknown."""
    for pattern, spec in GPU_SPECS:
        if device_name and re.search(pattern, device_name, re.IGNORECASE):
            return spec
    return None


def device_name() -> str:
    return torch.cuda.get_device_name() if ON_GPU else f"CPU ({platform.processor() or platform.machine()})"


def roofline_fraction(spec: GpuSpec | None, *, dtype: str, tflops: float | None = None, gbps: float | None = None,
                      tf32: bool = True) -> float | None:
    """The fraction of the GPU's peak a result reaches: TFLOP/s against the dtype's peak (fp32 against TF32 when
    TF32 is on), or GB/s against HBM bandwidth. None for an unknown GPU."""
    if spec is None:
        return None
    if tflops is not None:
        return tflops / spec.tflops["tf32" if dtype == "fp32" and tf32 else dtype]
    if gbps is not None:
        return gbps / spec.hbm_gbps
    return None


# ----------------------------------------------------------------------------------------------- results, ratios

def _nvidia_smi(field: str) -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def environment(**settings) -> dict:
    """What ran where: written into every results file."""
    import triton

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": DEVICE.type,
        "gpu": device_name(),
        "gpu_spec": getattr(gpu_spec(device_name()), "name", None),
        "driver": _nvidia_smi("driver_version") if ON_GPU else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "interpreter": INTERPRET,
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        **settings,
    }


def write_results(path: str, environment: dict, rows: list[dict], **extra) -> None:
    """Write (or rewrite, as rows accumulate) a results file; atomically, so a run killed mid-write leaves the
    previous version."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump({"environment": environment, "rows": rows, **extra}, handle, indent=1, default=str)
    os.replace(temporary, path)


def chart_path(json_path: str) -> str:
    """The PNG chart that goes beside a results file."""
    return os.path.splitext(json_path)[0] + ".png"


def add_speedups(rows: list[dict], group_keys: Iterable[str]) -> None:
    """Set ``speedup_vs_eager`` on every timed row: the eager provider's time over this row's, within the group of
    rows that agree on ``group_keys`` (e.g. layer, dtype, pass)."""
    group_keys = tuple(group_keys)
    eager = {tuple(row[key] for key in group_keys): row["ms"] for row in rows
             if row["provider"] == EAGER and row.get("ms")}
    for row in rows:
        baseline = eager.get(tuple(row[key] for key in group_keys))
        row["speedup_vs_eager"] = round(baseline / row["ms"], 4) if baseline and row.get("ms") else None


# ------------------------------------------------------------------------------------------------------- goals

@dataclasses.dataclass(frozen=True)
class GoalResult:
    goal: str  # what is asked, e.g. "LRN fwd+bwd >= 5x eager"
    measured: str  # the worst case among the rows the goal covers, e.g. "4.2x (lrn2 bf16)"
    status: str  # "pass", "FAIL", or "no data" (the rows it needs were not measured)


def check_minimum(goal: str, values: list[tuple[float, str]], minimum: float, unit: str = "x") -> GoalResult:
    """A goal met when every value (with a label saying where it was measured) is at least ``minimum``."""
    values = [(value, where) for value, where in values if value is not None and math.isfinite(value)]
    if not values:
        return GoalResult(goal, "-", "no data")
    worst, where = min(values)
    shown = f"{worst * 100:.0f}%" if unit == "%" else f"{worst:.3g}{unit}"
    return GoalResult(goal, f"{shown} ({where})", "pass" if worst >= minimum else "FAIL")


def print_goals(console, results: list[GoalResult], note: str = "") -> None:
    from rich.table import Table

    table = Table(title="Goals" + (f" ({note})" if note else ""), title_justify="left")
    for column in ("goal", "worst measured", "status"):
        table.add_column(column)
    colours = {"pass": "green", "FAIL": "bold red", "no data": "yellow"}
    for result in results:
        table.add_row(result.goal, result.measured, f"[{colours[result.status]}]{result.status}[/]")
    console.print(table)


def print_errors(console, rows: list[dict], fields: tuple[str, ...]) -> None:
    """Each failed row's error, in red, after its ``fields``."""
    for row in rows:
        if row.get("error"):
            console.print(f"[red]{' '.join(str(row[field]) for field in fields)}: {row['error']}[/]")


def target_gpu_note() -> str:
    """The goals are set for an H100 or H200 at batch 128; say so when the numbers come from elsewhere."""
    spec = gpu_spec(device_name()) if ON_GPU else None
    if spec is not None and spec.name.startswith(("H100", "H200")):
        return ""
    return "set for H100/H200 at batch 128; informative only on " + (device_name() if ON_GPU else "the CPU")


def make_console():
    """A rich console wide enough that tables are not wrapped in logs (no terminal there)."""
    from rich.console import Console

    return Console(width=max(160, shutil.get_terminal_size((160, 40)).columns), highlight=False)


def case_done(console, args, environment: dict, rows: list[dict], group_keys: Iterable[str], label: str) -> None:
    """After each case of a run: the speed-ups so far, the results file rewritten (a run killed later keeps what it
    measured), a progress line."""
    add_speedups(rows, group_keys)
    if args.json:
        write_results(args.json, environment, rows)
    console.print(f"  {label} done", style="dim")


def finish(console, args, environment: dict, rows: list[dict], group_keys: Iterable[str], *, evaluate_goals,
           print_rows, write_chart, interrupted: bool) -> int:
    """The end of every benchmark run: speed-ups, the tables, the goals, the JSON and its chart. Returns the exit
    status: 130 when interrupted, 1 when a case failed, else 0."""
    add_speedups(rows, group_keys)
    goals = evaluate_goals(rows)
    print_rows(console, rows)
    print_goals(console, goals, target_gpu_note())
    if args.json:
        write_results(args.json, environment, rows, goals=[dataclasses.asdict(goal) for goal in goals],
                      interrupted=interrupted)
        if rows:
            write_chart(chart_path(args.json), rows, environment)
        console.print(f"wrote {args.json} and {chart_path(args.json)}")
    failed = any(row.get("error") for row in rows)
    return 130 if interrupted else 1 if failed else 0


def speedup_chart(path: str, rows: list[dict], environment: dict, title: str, label: Callable[[dict], str],
                  provider_key: Callable[[str], object] = str) -> None:
    """A PNG of every provider's speed-up over eager: one panel per dtype, one group of bars per ``label(row)``."""
    panels: dict[str, dict[str, dict[str, float | None]]] = {}
    for row in rows:
        if row["provider"] != EAGER:
            groups = panels.setdefault(row["dtype"], {})
            groups.setdefault(label(row), {})[row["provider"]] = row.get("speedup_vs_eager")
    ratio_chart(path, title,
                {panel: [(name, dict(sorted(values.items(), key=lambda item: provider_key(item[0]))))
                         for name, values in groups.items()] for panel, groups in panels.items()},
                subtitle=f"{environment['gpu']}, batch {environment['batch_size']}, torch {environment['torch']}, "
                         f"triton {environment['triton']}, {environment['date']}")


def ratio_chart(path: str, title: str, panels: dict[str, list[tuple[str, dict[str, float | None]]]],
                reference: float = 1.0, subtitle: str = "") -> None:
    """Horizontal bars, one panel per key of ``panels`` side by side; in each panel a group of bars per row
    ``(label, {series: value})``, each bar labelled with its value ("1.52X"), and a dashed line at ``reference``
    (1.0: as fast as PyTorch eager). Missing values (None, NaN) are left out; a series keeps its colour in every
    panel."""
    from tritonnet import plot

    series = list(dict.fromkeys(name for rows in panels.values() for _, values in rows for name in values))
    charts = [plot.BarChart({label: {name: values.get(name) for name in series} for label, values in rows},
                            title=panel, reference=reference, value_format="{:.2f}X")
              for panel, rows in panels.items()]
    plot.save(path, charts, panel_size=(560, 160), title=title, subtitle=subtitle)
