"""Registers, spills, shared memory, tensor-core use and NaN-dropping max of every kernel a training step launches,
compiled for sm_80 and sm_90.

    python benchmarks/compile_report.py [--archs 80 90] [--json results/compile.json]
    python benchmarks/compile_report.py --smoke     # alexnet-small at batch 2, fp32, sm_90 only

No GPU is needed: ``benchmarks.step_launches.compile_steps_in_subprocess`` records the launches of the training steps
in ``benchmarks.step_launches.STEPS`` (tritonnet.kernels.launches) and compiles every surviving config of every
distinct launch in a fresh process with ``TRITON_INTERPRET=0``, reading ``cuobjdump``'s resource usage. These are the
rows that tests/test_gpu_compile.py asserts on; this script only shows them, and exits 1 if a kernel failed to
compile.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, step_launches
from benchmarks.step_launches import Step
from tritonnet.kernels import gpu_compile

COLUMNS = ("kernel", "arch", "dtype", "config", "registers", "spills", "shared_bytes", "tensor_cores",
           "nan_dropping_max", "compile_s")


SMOKE_STEPS = (Step("alexnet-small", 2, "fp32"),)


def print_table(console, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="Kernels compiled for GPU (cuobjdump -res-usage)", title_justify="left")
    for column in (*COLUMNS, "error"):
        table.add_column(column.replace("_", " "), no_wrap=column != "error")
    for row in sorted(rows, key=lambda row: (row["module"], row["kernel"], row["dtype"], row["arch"], row["config"])):
        if row.get("error"):
            table.add_row(row["kernel"], row["arch"], row["dtype"], row["config"], *[""] * 6,
                          f"[red]{row['error'][:200]}[/]")
            continue
        spills = f"[red]{row['spills']}[/]" if row["spills"] else "0"
        if row["tensor_cores"]:
            tensor_cores = "yes"
        else:
            tensor_cores = "[red]NO[/]" if row["expects_tensor_cores"] else "-"
        shared = f"{row['shared_bytes']:,}"
        if row["shared_bytes"] > row["shared_limit"]:
            shared = f"[red]{shared}[/]"
        nans = f"[red]{row['nan_dropping_max']}[/]" if row["must_keep_nans"] and row["nan_dropping_max"] else "0"
        table.add_row(row["kernel"], row["arch"], row["dtype"], row["config"], str(row["registers"]), spills,
                      shared, tensor_cores, nans, f"{row['compile_s']:.1f}", "")
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", type=int, default=None, help="default 80 90 (90 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="alexnet-small at batch 2 in fp32, sm_90")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    steps = SMOKE_STEPS if args.smoke else step_launches.STEPS
    archs = tuple(args.archs) if args.archs else (90,) if args.smoke else gpu_compile.ARCHS
    console = harness.make_console()

    rows = step_launches.compile_steps_in_subprocess(steps, archs)
    print_table(console, rows)
    failed = [row for row in rows if row.get("error")]
    console.print(f"{len(rows)} compiles ({'; '.join(step.name for step in steps)}; "
                  f"{', '.join(f'sm_{arch}' for arch in archs)}): {len(failed)} failed, "
                  f"{sum(1 for row in rows if row.get('spills'))} with spills")
    if args.json:
        harness.write_results(args.json, harness.environment(steps=[step.label for step in steps],
                                                             archs=list(archs)), rows)
        console.print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
