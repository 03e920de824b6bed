"""Write OUTDIR/summary.md from what gpu_check.sh left in OUTDIR: the goals table first (each performance goal, the
worst measured value, pass/fail), then the machine, each stage's exit status, the correctness cases, the test result
line, the profile beside the roofline plan (benchmarks/results/plan.json), the key ratios, the training steps (cast to
bf16, and under bf16 autocast with torch.compile of tritonnet's model), and a row for the results table of
benchmarks/README.md.

    python benchmarks/summarize.py OUTDIR [--stages STAGES.tsv] [--tests-log tests.log]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

MEANING = {"0": "ok", "124": "timed out (partial results kept)", "1": "failures (see its log)",
           "2": "interrupted or usage error", "5": "no tests collected", "-": "not run"}


def _load(path: str) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _stages(path: str | None) -> list[list[str]]:
    if not path or not os.path.exists(path):
        return []
    with open(path) as handle:
        return [line.rstrip("\n").split("\t") for line in handle if line.strip()]


def _test_result(path: str | None) -> str:
    """pytest's last summary line, e.g. '412 passed, 3 skipped in 141.20s'."""
    if not path or not os.path.exists(path):
        return "no test log"
    with open(path, errors="replace") as handle:
        lines = [line.strip().strip("=").strip() for line in handle]
    found = [line for line in lines if re.search(r"\b(passed|failed|error|errors|no tests ran)\b.* in [\d.]+s", line)]
    return found[-1] if found else "no pytest summary line (killed before the end?)"


def _ratio(value) -> str:
    return f"{value:.2f}x" if isinstance(value, (int, float)) else "-"


def _throughput(row: dict | None) -> str:
    if row is None:
        return "-"
    roof = row.get("roofline_fraction")
    value = f"{row['tflops']:.3g} TFLOP/s" if "tflops" in row else f"{row['gbps']:.3g} GB/s"
    return value + (f" ({roof * 100:.0f}%)" if roof is not None else "")


def _key_ratios(kernels: dict) -> list[str]:
    rows = [row for row in kernels["rows"] if row.get("ms")]
    dtype = "bf16" if any(row["dtype"] == "bf16" for row in rows) else (rows[0]["dtype"] if rows else None)
    if dtype is None:
        return ["no kernel timings"]
    others = [p for p in dict.fromkeys(row["provider"] for row in rows) if p not in ("torch", "triton")]
    providers = ["triton", *others]
    lines = [f"Kernels in {dtype}: times faster than PyTorch eager; throughput (% of roofline).", "",
             "| layer | pass | " + " | ".join(f"{p} x eager" for p in providers) + " | eager | triton |",
             "|---|---|" + "---|" * len(providers) + "---|---|"]
    table: dict[tuple, dict] = {}
    for row in rows:
        if row["dtype"] == dtype:
            table.setdefault((row["layer"], row["pass"]), {})[row["provider"]] = row
    for (layer, pass_), by_provider in table.items():
        lines.append(f"| {layer} | {pass_} | "
                     + " | ".join(_ratio(by_provider.get(p, {}).get("speedup_vs_eager")) for p in providers)
                     + f" | {_throughput(by_provider.get('torch'))} | {_throughput(by_provider.get('triton'))} |")
    return lines


def _model_table(model: dict) -> list[str]:
    lines = ["| model | dtype | provider | images/s | x eager | peak MB | error |", "|---|---|---|---|---|---|---|"]
    for row in model["rows"]:
        images = f"{row['images_per_sec']:,.0f}" if row.get("images_per_sec") else "-"
        memory = f"{row['peak_mem_mb']:,.0f}" if row.get("peak_mem_mb") is not None else "-"
        dtype = f"{row['dtype']} autocast" if row.get("autocast") else row["dtype"]
        lines.append(f"| {row['model']} | {dtype} | {row['provider']} | {images} | "
                     f"{_ratio(row.get('speedup_vs_eager'))} | {memory} | {(row.get('error') or '')[:80]} |")
    return lines


def readme_row(environment: dict, kernels: dict | None, model: dict | None) -> str:
    """A row for benchmarks/README.md's results table."""
    def worst(op: str, pass_: str, dtype: str = "bf16") -> str:
        values = [row["speedup_vs_eager"] for row in (kernels or {}).get("rows", [])
                  if row["op"] == op and row["pass"] == pass_ and row["dtype"] == dtype and row["provider"] == "triton"
                  and row.get("speedup_vs_eager")]
        return f"{min(values):.2f}x" if values else "-"

    step = "-"
    if model:
        by_provider = {row["provider"]: row for row in model["rows"]
                       if row["model"] == "alexnet" and row["dtype"] == "bf16" and row.get("images_per_sec")}
        if "tritonnet" in by_provider:
            ours = by_provider["tritonnet"]
            step = f"{ours['images_per_sec']:,.0f} img/s ({_ratio(ours.get('speedup_vs_eager'))})"
    goals = [goal for source in (kernels, model) if source for goal in source.get("goals", [])]
    passed = sum(goal["status"] == "pass" for goal in goals)
    return (f"| {environment.get('date', '-')[:10]} | {environment.get('gpu', '-')} "
            f"| {environment.get('driver') or '-'} | {environment.get('torch', '-')} "
            f"| {environment.get('triton', '-')} | {step} "
            f"| {worst('local_response_norm', 'fwd+bwd')} | {worst('max_pool2d', 'fwd+bwd')} "
            f"| {worst('conv2d', 'fwd')} | {worst('linear', 'fwd+bwd')} | {passed}/{len(goals)} |")


PLAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "plan.json")
PLAN_MODULES = {"conv2d": "conv.", "local_response_norm": "lrn.", "max_pool2d": "maxpool.", "linear": "linear.",
                "cross_entropy": "cross_entropy."}


def _correctness(correctness: dict) -> list[str]:
    rows = correctness["rows"]
    failed = [row for row in rows if not row.get("passed")]
    lines = [f"{len(rows) - len(failed)} of {len(rows)} cases within bounds."]
    for row in failed:
        detail = row.get("error") or f"fwd {row.get('forward_error')}, bwd {row.get('backward_errors')}"
        lines.append(f"- FAIL {row['dtype']} {row['layer']} {row['op']} {row['shape']}: {detail}")
    return lines


def _profile_beside_plan(profile: list, plan: dict | None) -> list[str]:
    """Each layer's measured forward time beside the plan's floor for the forward kernels of that op at that input
    shape, and the measured step beside the plan's step floor."""
    floors: dict[tuple[str, str], float] = {}
    for row in (plan or {}).get("rows", []):
        if "forward" in row["kernel"]:
            key = (row["kernel"].split(".")[0] + ".", row["layer"])
            floors[key] = floors.get(key, 0.0) + row["padded_floor_us"] / 1e3
    lines = ["| layer | kind | provider | fwd ms | plan fwd floor ms | bwd ms |", "|---|---|---|---|---|---|"]
    for row in profile:
        if not row.get("configured") and row.get("kind") != "step":
            continue
        op = row["kind"].split("+")[0]
        shape = "x".join(map(str, row.get("shape") or []))
        if row["kind"] == "step":
            floor = (plan or {}).get("floor_us")
            floor = floor / 1e3 if floor else None
        else:
            floor = floors.get((PLAN_MODULES.get(op, "?"), shape))
        lines.append(f"| {row['layer']} | {row['kind']} | {row['provider']} | {_number(row.get('forward_ms'))} | "
                     f"{_number(floor)} | {_number(row.get('backward_ms'))} |")
    return lines


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def summarize(outdir: str, stages_path: str | None = None, tests_log: str | None = None) -> str:
    kernels = _load(os.path.join(outdir, "kernels.json"))
    model = _load(os.path.join(outdir, "model.json"))
    training_compiled = _load(os.path.join(outdir, "training_compiled.json"))
    correctness = _load(os.path.join(outdir, "correctness.json"))
    profile = _load(os.path.join(outdir, "profile.json"))
    environment = (kernels or model or correctness or {}).get("environment", {})
    goals = [goal for source in (kernels, model) if source for goal in source.get("goals", [])]
    lines = ["# tritonnet GPU check", "", "## Goals (H100/H200, batch 128)", "",
             "| goal | worst measured | status |", "|---|---|---|"]
    lines += [f"| {goal['goal']} | {goal['measured']} | {goal['status']} |" for goal in goals] or [
        "| (no benchmark finished) | - | no data |"]
    lines += ["",
             f"- date: {environment.get('date', '-')}",
             f"- GPU: {environment.get('gpu', '-')} (roofline table: {environment.get('gpu_spec') or 'unknown GPU'}),"
             f" driver {environment.get('driver') or '-'}",
             f"- torch {environment.get('torch', '-')} (CUDA {environment.get('cuda') or '-'}), "
             f"triton {environment.get('triton', '-')}, python {environment.get('python', '-')}",
             f"- tests: {_test_result(tests_log)}", "",
             "## Stages", "", "| stage | exit status | seconds | limit (s) | meaning |", "|---|---|---|---|---|"]
    for stage in _stages(stages_path):
        name, status, seconds, limit = (stage + ["-"] * 4)[:4]
        lines.append(f"| {name} | {status} | {seconds} | {limit} | {MEANING.get(status, 'failed')} |")
    if correctness:
        lines += ["", "## Correctness at AlexNet's shapes", "", *_correctness(correctness)]
    if isinstance(profile, list):
        lines += ["", "## Profile beside the plan", "", *_profile_beside_plan(profile, _load(PLAN))]
    if kernels:
        lines += ["", "## Key ratios", "", *_key_ratios(kernels)]
    if model:
        lines += ["", "## Training steps", "", *_model_table(model)]
    if training_compiled:
        lines += ["", "## Training steps under torch.compile (bf16 autocast)", "", *_model_table(training_compiled)]
    lines += ["", "## Row for benchmarks/README.md", "", readme_row(environment, kernels, model), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--stages", default=None, help="tab-separated: stage, exit status, seconds, limit")
    parser.add_argument("--tests-log", default=None)
    args = parser.parse_args(argv)
    text = summarize(args.outdir, args.stages, args.tests_log)
    with open(os.path.join(args.outdir, "summary.md"), "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
