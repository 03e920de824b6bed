"""A GPU training step planned on paper: the roofline floor of every kernel AlexNet launches, from the launch recorder.

    python benchmarks/plan.py [--model alexnet] [--batch-size 128] [--dtype bf16] [--json PATH] [--markdown PATH]

The launches of one training step (forward, loss, backward) are recorded on meta tensors as an H200 would make
them (tritonnet.kernels.launches), and their chosen configs compiled for sm_90 (tritonnet.kernels.gpu_compile) for
registers and shared memory. The chosen config is the recorder's stand-in for the autotuner's pick: the first config
that survives pruning. Per launch:

- FLOPs: GEMM kernels (a weight tensor and a ``tl.dot``) do ``2 x weight elements x output pixels`` (conv: out
  channels x in channels per group x kernel taps, per output pixel; linear: out x in features per row), whichever
  of the three products the kernel computes. Other kernels are counted as memory-bound (0 FLOPs).
- Minimum bytes: every tensor argument read or written once (its elements x element size).
- Roofline time: max(FLOPs / peak, bytes / bandwidth), with the H200's measured bf16 peak (790 TFLOP/s; TF32 half
  of it, CUDA-core fp32 67) and 4.8 TB/s.
- Grid, programs per SM at once (from registers, shared memory, warps: the occupancy), waves = programs / (SMs x
  programs per SM), and the wave tail: the idle fraction of the last wave. ``wave floor`` is the roofline time
  divided by the wave efficiency (waves / whole waves): a tail idles SMs that the roofline counts as busy.
- Tile use: the fraction of each tile's channel or feature extent that is real work (48 channels in a 64-wide tile:
  0.75); the ``padded floor`` divides the wave floor of a compute-bound kernel by it.
- Share: the launch's padded floor over the step's. The total is the step's floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.step_launches import Step, compile_steps_in_subprocess, record_steps
from tritonnet.kernels import runtime
from tritonnet.kernels.launches import Launch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclasses.dataclass(frozen=True)
class Machine:
    name: str
    architecture: int
    tflops: dict[str, float]  # dense: "bf16"/"fp16"/"tf32" on tensor cores, "fp32" on CUDA cores
    bandwidth_gbps: float


# The bf16 rate is what a large matrix product reached on an H200 (benchmarks/README.md), not the datasheet's 989.
H200 = Machine("H200 SXM", 90, {"bf16": 790.0, "fp16": 790.0, "tf32": 395.0, "fp32": 67.0}, 4800.0)

# Tile meta-parameters and the argument holding the extent each tiles (channels, features): where tiles pad.
TILE_EXTENTS = {
    "BLOCK_OUT_CHANNELS": "out_channels_per_group",
    "BLOCK_IN_CHANNELS": "in_channels_per_group",
    "BLOCK_OUT": "out_features",
    "BLOCK_IN": "in_features",
}
# A GEMM's weight (or its gradient, or per-split partial sums of it: (splits, out, reduction)) and the tensor whose
# rows are its output pixels (rows x out channels or features).
WEIGHT_ARGUMENTS = ("weight_pointer", "grad_weight_pointer", "weight_partials_pointer")
PIXEL_ARGUMENTS = ("grad_output_pointer", "output_pointer")


def _elements(launch: Launch, name: str) -> int:
    return math.prod(launch.argument(name).shape)


def _names(launch: Launch) -> set[str]:
    return {argument.name for argument in launch.arguments}


def flops(launch: Launch) -> float:
    """``2 x output elements x reduction`` for a GEMM kernel (any of the three conv/linear products), where the
    reduction is the weight's elements per out channel (conv: in channels per group x taps; linear: in features);
    else 0."""
    names = _names(launch)
    weight = next((name for name in WEIGHT_ARGUMENTS if name in names), None)
    pixels = next((name for name in PIXEL_ARGUMENTS if name in names), None)
    if weight is None or pixels is None or launch.module not in ("tritonnet.kernels.conv", "tritonnet.kernels.linear"):
        return 0.0
    weight_shape, pixel_shape = launch.argument(weight).shape, launch.argument(pixels).shape
    splits = weight_shape[0] if weight.endswith("partials_pointer") else 1
    reduction = math.prod(weight_shape) / (splits * pixel_shape[1])
    return 2.0 * math.prod(pixel_shape) * reduction


def minimum_bytes(launch: Launch) -> int:
    """Every tensor argument read or written once."""
    return sum(math.prod(argument.shape) * argument.element_size for argument in launch.arguments
               if argument.is_pointer and argument.shape is not None)


def precision(launch: Launch) -> str:
    kinds = {argument.kind for argument in launch.arguments if argument.is_pointer}
    if "*bf16" in kinds or "*fp16" in kinds:
        return "bf16"
    values = {argument.value for argument in launch.arguments if argument.name == "INPUT_PRECISION"}
    return "tf32" if "tf32" in values else "fp32"


def tile_use(launch: Launch) -> float:
    """The fraction of the chosen tile's channel/feature extents that is real work."""
    blocks = dict(launch.chosen.blocks)
    use = 1.0
    for block_name, extent_name in TILE_EXTENTS.items():
        if block_name in blocks and extent_name in _names(launch):
            extent, block = launch.argument(extent_name).value, blocks[block_name]
            if isinstance(extent, int) and extent > 0:
                use *= extent / (math.ceil(extent / block) * block)
    # a channels-inner reduction walks the in channels of each tap in BLOCK_WINDOW chunks
    inner = {argument.value for argument in launch.arguments if argument.name == "CHANNELS_INNER"}
    if True in inner and "BLOCK_WINDOW" in blocks and "in_channels_per_group" in _names(launch):
        channels, chunk = launch.argument("in_channels_per_group").value, blocks["BLOCK_WINDOW"]
        if isinstance(channels, int) and channels > 0:
            use *= channels / (math.ceil(channels / chunk) * chunk)
    return use


def occupancy(registers: int | None, shared_bytes: int | None, warps: int,
              architecture: runtime.Architecture) -> int:
    """Programs one SM holds at once: limited by registers (allocated per warp in units of 256), shared memory
    (1 KiB reserved per block), threads and the block limit."""
    threads = 32 * warps
    by_threads = architecture.threads_per_multiprocessor // threads
    by_registers = by_threads
    if registers:
        per_warp = math.ceil(registers * 32 / 256) * 256
        by_registers = architecture.registers_per_multiprocessor // (per_warp * warps)
    by_shared = architecture.blocks_per_multiprocessor
    if shared_bytes:
        by_shared = architecture.shared_memory_per_multiprocessor // (shared_bytes + 1024)
    return max(0, min(by_threads, by_registers, by_shared, architecture.blocks_per_multiprocessor))


def plan_rows(launches: list[Launch], compiled: dict[str, dict], machine: Machine = H200) -> list[dict]:
    architecture = runtime.ARCHITECTURES[machine.architecture]
    rows = []
    for index, launch in enumerate(launches):
        compile_row = compiled.get(compile_key(launch), {})
        work, moved = flops(launch), minimum_bytes(launch)
        kind = precision(launch)
        compute_s = work / (machine.tflops[kind] * 1e12)
        memory_s = moved / (machine.bandwidth_gbps * 1e9)
        roofline_s = max(compute_s, memory_s)
        programs = math.prod(launch.grid)
        per_sm = occupancy(compile_row.get("registers"), compile_row.get("shared_bytes"), launch.chosen.num_warps,
                           architecture)
        waves = programs / (architecture.multiprocessors * per_sm) if per_sm else float("inf")
        whole = math.ceil(waves)
        efficiency = waves / whole if whole else 1.0
        use = tile_use(launch) if work else 1.0
        wave_floor = roofline_s / efficiency
        padded_floor = wave_floor / use if compute_s >= memory_s else wave_floor
        rows.append({
            "index": index, "kernel": launch.name, "layer": layer_of(launch), "precision": kind,
            "config": launch.chosen.label, "surviving_configs": len(launch.configs), "gflop": work / 1e9,
            "megabytes": moved / 1e6, "bound": "compute" if compute_s >= memory_s else "memory",
            "roofline_us": roofline_s * 1e6, "grid": list(launch.grid), "programs": programs,
            "registers": compile_row.get("registers"), "shared_bytes": compile_row.get("shared_bytes"),
            "programs_per_sm": per_sm, "waves": waves, "wave_tail": 1.0 - (waves - (whole - 1)) if whole else 0.0,
            "wave_floor_us": wave_floor * 1e6, "tile_use": use, "padded_floor_us": padded_floor * 1e6,
        })
    total = sum(row["padded_floor_us"] for row in rows)
    for row in rows:
        row["share"] = row["padded_floor_us"] / total if total else 0.0
    return rows


def layer_of(launch: Launch) -> str:
    """A short description of the launch's shapes: the first tensor argument's."""
    first = next((argument for argument in launch.arguments if argument.is_pointer and argument.shape), None)
    return "x".join(map(str, first.shape)) if first else "-"


def compile_key(launch: Launch) -> str:
    """The compile report's row for this launch's chosen config: kernel, config and specialization."""
    from tritonnet.kernels.gpu_compile import specialization_label

    return f"{launch.kernel}|{launch.chosen.label}|{specialization_label(launch, launch.chosen)}"


def weak_spots(rows: list[dict]) -> list[str]:
    """The launches whose floor the plan says a change could lower: wave tails over a third of a wave in
    kernels of at least 1% of the step, padded tiles, and the gather tile."""
    notes = []
    for row in rows:
        where = f"#{row['index']} {row['kernel']} {row['layer']}"
        if row["share"] >= 0.01 and row["waves"] < 8 and row["wave_tail"] > 0.33:
            notes.append(f"{where}: {row['waves']:.2f} waves, the last {row['wave_tail']:.0%} idle "
                         f"({row['share']:.1%} of the step)")
        if row["tile_use"] < 0.9:
            notes.append(f"{where}: tiles {row['tile_use']:.0%} used ({row['config']})")
        if "BLOCK_WINDOW=16" in row["config"] and row["kernel"].startswith("conv."):
            notes.append(f"{where}: the 64x64x16 gather tile ({row['share']:.1%} of the step)")
    return notes


def markdown(rows: list[dict], step: Step, machine: Machine) -> str:
    total = sum(row["padded_floor_us"] for row in rows)
    roofline = sum(row["roofline_us"] for row in rows)
    lines = [f"# Step plan: {step.label} on {machine.name}", "",
             f"Roofline floor {roofline / 1e3:.3f} ms; with wave tails and tile padding {total / 1e3:.3f} ms "
             f"({step.batch / (total / 1e6):,.0f} images/s at best). Peaks: {machine.tflops['bf16']:g} TFLOP/s bf16, "
             f"{machine.bandwidth_gbps / 1e3:g} TB/s. Chosen config = the first surviving autotune config "
             "(a stand-in for the autotuner's pick).", "",
             "| # | kernel | first tensor | config | GFLOP | MB | bound | roofline us | grid | regs | smem B | "
             "per SM | waves | tail | tile use | floor us | share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['index']} | {row['kernel']} | {row['layer']} | {row['config']} | {row['gflop']:.2f} | "
            f"{row['megabytes']:.1f} | {row['bound']} | {row['roofline_us']:.1f} | "
            f"{'x'.join(map(str, row['grid']))} | {row['registers']} | {row['shared_bytes']} | "
            f"{row['programs_per_sm']} | {row['waves']:.2f} | {row['wave_tail']:.0%} | {row['tile_use']:.2f} | "
            f"{row['padded_floor_us']:.1f} | {row['share']:.1%} |")
    lines += ["", f"**Total: roofline {roofline:.1f} us, floor {total:.1f} us.**", "", "## Weak spots", ""]
    lines += [f"- {note}" for note in weak_spots(rows)] or ["- none"]
    return "\n".join(lines) + "\n"


def plan(step: Step, machine: Machine = H200) -> list[dict]:
    launches = record_steps([step])[step]
    compiled = {f"{row['kernel']}|{row['config']}|{row['specialization']}": row
                for row in compile_steps_in_subprocess([step], (machine.architecture,), chosen_only=True)}
    return plan_rows(launches, compiled, machine)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--contiguous", action="store_true", help="NCHW tensors instead of channels-last")
    parser.add_argument("--json", default=os.path.join(RESULTS, "plan.json"))
    parser.add_argument("--markdown", default=os.path.join(RESULTS, "plan.md"))
    args = parser.parse_args(argv)
    step = Step(args.model, args.batch_size, args.dtype, channels_last=not args.contiguous,
                architecture=H200.architecture, tf32=args.dtype == "fp32")
    rows = plan(step)
    text = markdown(rows, step, H200)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"step": dataclasses.asdict(step), "machine": dataclasses.asdict(H200),
                       "floor_us": sum(row["padded_floor_us"] for row in rows),
                       "roofline_us": sum(row["roofline_us"] for row in rows), "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
