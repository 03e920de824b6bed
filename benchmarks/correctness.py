"""Every op, forward and backward, at AlexNet's real layer shapes, against torch: the GPU check's first stage.

    python benchmarks/correctness.py [--batch-size 128] [--dtypes bf16 fp32] [--json PATH]
    python benchmarks/correctness.py --smoke      # tiny shapes, in the interpreter on a CPU

Each case of ``bench_kernels.alexnet_cases`` runs through the public functional API with the ``triton`` provider in
the dtype, and with ``torch`` on the same inputs in fp32, then backward of the same random output gradient. The
relative error ``||ours - torch|| / ||torch||`` of the output and of each input gradient must stay within the
dtype's bound (bf16: 2e-2, fp32 with TF32: 5e-3, fp32: 1e-4). Ops that draw random numbers (dropout, linear with
dropout) are checked for shapes, finiteness and the fraction of zeros instead. The JSON is rewritten after every
case, so a cut run keeps what it checked; the exit status is 1 if any case failed.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from benchmarks import bench_kernels, harness

BOUNDS = {"bf16": 2e-2, "fp16": 5e-3, "tf32": 5e-3, "fp32": 1e-4}


def _relative_error(value: torch.Tensor, expected: torch.Tensor) -> float:
    value, expected = value.double(), expected.double()
    return float((value - expected).norm() / expected.norm().clamp_min(1e-30))


def _run(case: bench_kernels.Case, tensors: list[torch.Tensor], provider: str, grad_output: torch.Tensor | None,
         dtype: torch.dtype | None = None):
    """Forward and backward of ``case`` through ``provider``, its floating inputs cast to ``dtype`` if given."""
    inputs = [(tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor).detach().clone()
              .requires_grad_(index in case.needs_grad) for index, tensor in enumerate(tensors)]
    output = case.forward(inputs, provider)
    if grad_output is None:
        grad_output = torch.randn_like(output, dtype=torch.float32).to(output.dtype)
    output.backward(grad_output.to(output.dtype))
    return output.detach(), [inputs[index].grad for index in case.needs_grad], grad_output


def check_case(case: bench_kernels.Case, dtype: torch.dtype, tf32: bool) -> dict:
    name = harness.dtype_name(dtype)
    bound = BOUNDS["tf32" if name == "fp32" and tf32 else name]
    row = {"layer": case.layer, "op": case.op, "shape": case.shape, "dtype": name, "bound": bound, "error": None}
    try:
        tensors = case.make_tensors(dtype)
        output, grads, grad_output = _run(case, tensors, "triton", None)
        expected, expected_grads, _ = _run(case, tensors, "torch", grad_output, torch.float32)
    except Exception as error:  # noqa: BLE001  (reported as this case's failure; the others still run)
        row.update(error=f"{type(error).__name__}: {str(error).strip()[:500]}", passed=False)
        return row
    finite = bool(torch.isfinite(output).all()) and all(bool(torch.isfinite(grad).all()) for grad in grads)
    if case.random:
        zeros, expected_zeros = float((output == 0).float().mean()), float((expected == 0).float().mean())
        # two independent draws of n Bernoulli(p <= 1/2) fractions differ by at most 5 standard deviations
        allowed = 5 * (0.5 / output.numel()) ** 0.5
        row.update(zero_fraction=zeros, expected_zero_fraction=expected_zeros,
                   passed=finite and output.shape == expected.shape and abs(zeros - expected_zeros) <= allowed)
        return row
    errors = [_relative_error(output, expected)] + [_relative_error(grad, reference)
                                                    for grad, reference in zip(grads, expected_grads)]
    row.update(forward_error=errors[0], backward_errors=errors[1:], passed=finite and max(errors) <= bound)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (bench_kernels.SMOKE), batch 2")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 (2 with --smoke)")
    parser.add_argument("--dtypes", nargs="+", choices=list(harness.DTYPES), default=["bf16", "fp32"])
    parser.add_argument("--no-tf32", dest="tf32", action="store_false", help="fp32 products in full fp32")
    parser.add_argument("--json", default=None, help="write the rows here (rewritten after every case)")
    args = parser.parse_args(argv)
    batch = args.batch_size or (2 if args.smoke else 128)
    geometry = bench_kernels.SMOKE if args.smoke else bench_kernels.ALEXNET
    harness.fair_settings(args.tf32)
    torch.manual_seed(0)
    rows = []
    for dtype in (harness.DTYPES[name] for name in args.dtypes):
        for case in bench_kernels.alexnet_cases(batch, geometry):
            row = check_case(case, dtype, args.tf32)
            rows.append(row)
            verdict = "ok" if row["passed"] else "FAIL"
            detail = row["error"] or (f"zeros {row['zero_fraction']:.3f} vs {row['expected_zero_fraction']:.3f}"
                                      if "zero_fraction" in row else
                                      f"errors fwd {row['forward_error']:.2e}, bwd "
                                      f"{', '.join(f'{error:.2e}' for error in row['backward_errors'])}")
            print(f"{verdict:4} {row['dtype']} {row['layer']:6} {row['op']:20} {row['shape']:16} {detail}",
                  flush=True)
            if args.json:
                harness.write_results(args.json, harness.environment(batch=batch, tf32=args.tf32), rows)
    failed = [row for row in rows if not row["passed"]]
    print(f"correctness: {len(rows) - len(failed)} of {len(rows)} cases within bounds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
