"""Registers, spills, shared memory and tensor-core use of every Triton kernel, compiled for sm_80 and sm_90.

    python benchmarks/compile_report.py [--modules lrn conv] [--archs 80 90] [--json results/compile.json]
    python benchmarks/compile_report.py --smoke     # the kernel module with the fewest cases, sm_90 only

No GPU is needed: ``kernels.gpu_compile.compile_all_in_subprocess`` compiles each kernel module's
``compile_cases()`` (every kernel, every GPU tile config it is autotuned over, fp32/fp16/bf16) in a fresh process
with ``TRITON_INTERPRET=0`` and reads ``cuobjdump``'s resource usage. These are the rows that
tests/test_gpu_compile.py asserts on (no errors, no spills, shared memory within limits, tensor cores in fp16/bf16
GEMMs); this script only shows them, and exits 1 if a kernel failed to compile.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness
from kernels import gpu_compile

COLUMNS = ("kernel", "arch", "dtype", "config", "registers", "spills", "shared_bytes", "tensor_cores", "compile_s")


# The smoke run compiles the module with the fewest cases (one kernel, three dtypes). Counting cases here would
# need real JITFunctions, which an interpreter-mode process does not have.
SMOKE_MODULES = ("dropout",)


def print_table(console, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="Kernels compiled for GPU (cuobjdump -res-usage)", title_justify="left")
    for column in (*COLUMNS, "error"):
        table.add_column(column.replace("_", " "), no_wrap=column != "error")
    for row in sorted(rows, key=lambda row: (row["module"], row["kernel"], row["dtype"], row["arch"], row["config"])):
        if row.get("error"):
            table.add_row(row["kernel"], row["arch"], row["dtype"], row["config"], *[""] * 5,
                          f"[red]{row['error'][:200]}[/]")
            continue
        spills = f"[red]{row['spills']}[/]" if row["spills"] else "0"
        if row["tensor_cores"]:
            tensor_cores = "yes"
        else:
            tensor_cores = "[red]NO[/]" if row["expects_tensor_cores"] else "-"
        table.add_row(row["kernel"], row["arch"], row["dtype"], row["config"], str(row["registers"]), spills,
                      f"{row['shared_bytes']:,}", tensor_cores, f"{row['compile_s']:.1f}", "")
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", choices=gpu_compile.KERNEL_MODULES, default=None,
                        help="kernel modules (default: all)")
    parser.add_argument("--archs", nargs="+", type=int, default=None, help="default 80 90 (90 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="only the module with the fewest cases, sm_90")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    modules = tuple(args.modules) if args.modules else SMOKE_MODULES if args.smoke else gpu_compile.KERNEL_MODULES
    archs = tuple(args.archs) if args.archs else (90,) if args.smoke else gpu_compile.ARCHS
    console = harness.make_console()

    rows = gpu_compile.compile_all_in_subprocess(modules, archs) if modules else []
    if rows:
        print_table(console, rows)
    else:
        console.print(f"no compile cases in kernels modules {', '.join(modules) or '(none has compile_cases())'}")
    failed = [row for row in rows if row.get("error")]
    console.print(f"{len(rows)} compiles ({', '.join(modules)}; {', '.join(f'sm_{arch}' for arch in archs)}): "
                  f"{len(failed)} failed, {sum(1 for row in rows if row.get('spills'))} with spills")
    if args.json:
        harness.write_results(args.json, harness.environment(modules=list(modules), archs=list(archs)), rows)
        console.print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
