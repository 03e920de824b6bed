"""The benchmarks run end to end at smoke size, through ``benchmarks/gpu_check.sh --smoke`` exactly as a GPU machine
runs them at full size; their results cover every op x provider with the documented keys; and the accounting behind
the numbers (FLOPs, bytes, rooflines, ratios, goals, timing, the hypothesis cap) is right."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zlib

import pytest
import torch

import tritonnet
from benchmarks import bench_kernels, bench_model, harness
from benchmarks.harness import COMPILED, EAGER

# One worker runs the GPU check's smoke run that several tests here read (pytest -n).
pytestmark = pytest.mark.xdist_group("gpu_check_smoke")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = {"summary.md", "correctness.json", "model.json", "model.png", "training_compiled.json",
           "training_compiled.png", "profile.json", "kernels.json", "kernels.png", "logs.tar.gz"}
STAGES = ("environment", "correctness", "training", "training_compiled", "profile", "kernels", "tests")
KERNEL_KEYS = {"op", "layer", "shape", "dtype", "pass", "provider", "ms", "p20", "p80", "roofline_fraction",
               "speedup_vs_eager", "graph_bytes", "rel_error", "first_call_s", "timer", "error"}
MODEL_KEYS = {"model", "provider", "dtype", "batch", "images_per_sec", "peak_mem_mb", "ms", "p20", "p80",
              "speedup_vs_eager", "first_loss", "error"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``gpu_check.sh --smoke OUTDIR``: every stage (correctness, training, profile, kernel benchmarks, tests,
    summary)."""
    outdir = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--smoke", str(outdir)],
                          cwd=ROOT, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=600)
    return outdir, done


def _results(outdir, name: str) -> dict:
    with open(outdir / name) as handle:
        return json.load(handle)


def _png_size(path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature, every chunk's CRC and the pixel data's length."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        tag, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, f"bad CRC in {tag}"
        chunks[tag] = chunks.get(tag, b"") + body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    return width, height


# --------------------------------------------------------------------------------------------- the smoke run

def test_gpu_check_smoke_runs_every_stage_into_its_files(smoke_run):
    outdir, done = smoke_run
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    entries = set(os.listdir(outdir))
    assert entries == OUTPUTS
    assert all((outdir / name).is_file() and (outdir / name).stat().st_size < 16 * 2**20 for name in entries)
    summary = (outdir / "summary.md").read_text()
    order = [summary.index(f"| {stage} | 0 |") for stage in STAGES]
    assert order == sorted(order), summary
    assert "passed" in summary.split("tests:")[1].splitlines()[0]


def test_summary_leads_with_the_goals_table(smoke_run):
    outdir, _ = smoke_run
    sections = [line for line in (outdir / "summary.md").read_text().splitlines() if line.startswith("## ")]
    assert sections[0].startswith("## Goals")
    assert "## Correctness at AlexNet's shapes" in sections and "## Profile beside the plan" in sections


def test_correctness_stage_checks_every_case_forward_and_backward(smoke_run):
    outdir, _ = smoke_run
    rows = _results(outdir, "correctness.json")["rows"]
    assert {row["layer"] for row in rows} == {case.layer for case in bench_kernels.alexnet_cases(2,
                                                                                                   bench_kernels.SMOKE)}
    assert all(row["passed"] for row in rows), [row for row in rows if not row["passed"]]
    assert all(row["backward_errors"] for row in rows if "backward_errors" in row)


SMOKE_KERNEL_OPS, SMOKE_KERNEL_LAYERS = {"conv2d", "max_pool2d"}, {"conv2", "pool1"}  # gpu_check.sh --smoke's


def test_kernel_benchmark_covers_its_ops_with_every_provider_and_torch_compile(smoke_run):
    outdir, _ = smoke_run
    rows = _results(outdir, "kernels.json")["rows"]
    errors = [f"{row['layer']} {row['pass']} {row['provider']}: {row['error']}" for row in rows if row["error"]]
    assert not errors, "\n".join(errors)
    for row in rows:
        assert KERNEL_KEYS <= set(row), sorted(KERNEL_KEYS - set(row))
        assert row["p20"] <= row["ms"] <= row["p80"]
        assert ("tflops" in row) == (row["op"] in ("conv2d", "linear")) and ("gbps" in row) != ("tflops" in row)
    measured = {(row["op"], row["provider"], row["pass"]) for row in rows}
    expected = {(op, provider, pass_) for op, providers in tritonnet.available_kernels().items()
                if op in SMOKE_KERNEL_OPS for provider in [*providers, COMPILED] for pass_ in bench_kernels.PASSES}
    assert expected <= measured, sorted(expected - measured)
    assert {row["layer"] for row in rows} == SMOKE_KERNEL_LAYERS
    assert all(row["speedup_vs_eager"] == 1.0 for row in rows if row["provider"] == EAGER)


def test_kernel_outputs_agree_with_eager(smoke_run):
    outdir, _ = smoke_run
    rows = _results(outdir, "kernels.json")["rows"]
    checked = [row for row in rows if row["rel_error"] is not None and row["provider"] != EAGER]
    assert checked
    # a sanity check that a fast kernel computes the same function (the op tests check the numerics)
    wrong = [(row["layer"], row["provider"], row["rel_error"]) for row in checked if not row["rel_error"] < 1e-2]
    assert not wrong, wrong


def test_model_benchmark_times_tritonnet_eager_and_compile(smoke_run):
    outdir, _ = smoke_run
    rows = _results(outdir, "model.json")["rows"]
    assert {row["provider"] for row in rows} == {"tritonnet", EAGER, COMPILED}
    for row in rows:
        assert MODEL_KEYS <= set(row), sorted(MODEL_KEYS - set(row))
        assert row["error"] is None, row["error"]
        assert row["images_per_sec"] == pytest.approx(row["batch"] / row["ms"] * 1000, rel=1e-3)
        assert math.isfinite(row["first_loss"])


def test_compiled_training_step_runs_beside_eager_under_autocast(smoke_run):
    """torch.compile of tritonnet's model (the registered ops inside the compiled graphs) trains from the same
    weights as eager PyTorch, under bf16 autocast and channels-last, and the summary shows the rows."""
    outdir, _ = smoke_run
    rows = _results(outdir, "training_compiled.json")["rows"]
    assert [row["provider"] for row in rows] == [bench_model.OURS_COMPILED, EAGER]
    for row in rows:
        assert MODEL_KEYS <= set(row), sorted(MODEL_KEYS - set(row))
        assert row["error"] is None, row["error"]
        assert (row["dtype"], row["autocast"]) == ("bf16", True) and math.isfinite(row["first_loss"])
    assert rows[1]["speedup_vs_eager"] == 1.0 and rows[0]["speedup_vs_eager"] > 0
    summary = (outdir / "summary.md").read_text().split("## Training steps under torch.compile (bf16 autocast)")[1]
    assert f"| alexnet-small | bf16 autocast | {bench_model.OURS_COMPILED} |" in summary


def test_charts_are_valid_pngs(smoke_run):
    outdir, _ = smoke_run
    for name in ("kernels.png", "model.png", "training_compiled.png"):
        width, height = _png_size(outdir / name)
        assert width > 100 and height > 100


# ----------------------------------------------------------------------------------------------- accounting

# Forward multiply-accumulates per image, from the paper's table (docs/alexnet.md), in millions.
PAPER_MACS = {"conv1": 105.4, "conv2": 223.9, "conv3": 149.5, "conv4": 112.1, "conv5": 74.8, "fc6": 37.7,
              "fc7": 16.8, "fc8": 4.1}


def test_forward_flops_match_the_papers_multiply_accumulates():
    cases = {case.layer: case for case in bench_kernels.alexnet_cases(1) if case.flops is not None}
    assert set(cases) == set(PAPER_MACS)
    for layer, macs in PAPER_MACS.items():
        assert cases[layer].flops("fwd") / 2 / 1e6 == pytest.approx(macs, abs=0.05), layer


def test_conv_flops_follow_the_output_shape_torch_computes():
    for case in bench_kernels.alexnet_cases(128):
        if case.op != "conv2d":
            continue
        x, weight, bias = case.make_tensors(torch.float16, torch.device("meta"))
        output = case.reference(x, weight, bias)
        fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
        assert case.flops("fwd") == 2 * output.numel() * fan_in
        backward_products = 2 if case.layer == "conv1" else 3  # the image needs no gradient
        assert case.flops("fwd+bwd") == backward_products * case.flops("fwd")


def test_memory_bound_bytes_count_each_tensor_once():
    for case in bench_kernels.alexnet_cases(4, bench_kernels.ALEXNET):
        if case.bytes_moved is None:
            continue
        tensors = case.make_tensors(torch.float32, torch.device("meta"))
        output = case.reference(*tensors)
        n = tensors[0].numel()
        for size in (2, 4):
            forward, both = case.bytes_moved("fwd", size), case.bytes_moved("fwd+bwd", size)
            if case.op == "local_response_norm":  # plus the fp32 u = base^(-beta-1) saved for the backward
                assert (forward, both) == (2 * n * size + 4 * n, 5 * n * size + 8 * n)
                assert both == {2: 18, 4: 28}[size] * n  # kernels/lrn.py's budget: 18 bytes bf16, 28 fp32
            elif case.op == "dropout":
                assert (forward, both) == (2 * n * size, 4 * n * size)
            elif case.op == "max_pool2d":  # plus a 1-byte window offset per output, written then read
                m = output.numel()
                assert (forward, both) == ((n + m) * size + m, 2 * (n + m) * size + 2 * m)
            else:
                assert case.op == "cross_entropy"
                batch = tensors[1].numel()
                assert (forward, both) == (n * size + 8 * batch, 2 * n * size + 8 * batch)


@pytest.mark.parametrize("name, spec_name, bandwidth", [
    ("NVIDIA H200", "H200 SXM", 4800.0), ("NVIDIA H200 NVL", "H200 NVL", 4800.0),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 3350.0), ("NVIDIA H100 PCIe", "H100 PCIe", 2000.0),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB", 2039.0), ("NVIDIA A100-SXM4-40GB", "A100 40GB", 1555.0),
    ("NVIDIA GH200 480GB", None, None), ("NVIDIA GeForce RTX 4090", None, None), (None, None, None)])
def test_gpu_table_knows_h100_h200_a100_and_nothing_else(name, spec_name, bandwidth):
    spec = harness.gpu_spec(name)
    assert getattr(spec, "name", None) == spec_name
    assert getattr(spec, "hbm_gbps", None) == bandwidth


def test_roofline_fraction_uses_the_dtypes_peak_and_is_omitted_for_unknown_gpus():
    h200 = harness.gpu_spec("NVIDIA H200")
    assert harness.roofline_fraction(h200, dtype="bf16", tflops=h200.tflops["bf16"] / 2) == pytest.approx(0.5)
    assert harness.roofline_fraction(h200, dtype="fp32", tflops=h200.tflops["tf32"], tf32=True) == pytest.approx(1)
    assert harness.roofline_fraction(h200, dtype="fp32", tflops=h200.tflops["fp32"], tf32=False) == pytest.approx(1)
    assert harness.roofline_fraction(h200, dtype="fp16", gbps=2400.0) == pytest.approx(0.5)
    assert harness.roofline_fraction(None, dtype="bf16", tflops=100.0) is None


def _row(layer, op, pass_, provider, ms, dtype="bf16", **extra):
    return {"layer": layer, "op": op, "pass": pass_, "provider": provider, "ms": ms, "dtype": dtype,
            "shape": "128x96x55x55", **extra}


def test_speedups_are_eager_time_over_each_rows_time_within_a_group():
    rows = [_row("lrn1", "local_response_norm", "fwd", EAGER, 2.0), _row("lrn1", "local_response_norm", "fwd",
                                                                          "triton", 0.5),
            _row("lrn1", "local_response_norm", "fwd", "triton", 1.0, dtype="fp32"),
            _row("lrn1", "local_response_norm", "fwd", "triton", None)]
    harness.add_speedups(rows, ("layer", "dtype", "pass"))
    assert [row["speedup_vs_eager"] for row in rows] == [1.0, 4.0, None, None]


def _goal(results, prefix):
    return next(result for result in results if result.goal.startswith(prefix))


def test_goals_pass_at_their_thresholds_and_fail_below():
    def rows(lrn_speedup):
        eager_ms = 1.0
        return [
            _row("lrn1", "local_response_norm", "fwd+bwd", EAGER, eager_ms, speedup_vs_eager=1.0,
                 roofline_fraction=0.1),
            _row("lrn1", "local_response_norm", "fwd+bwd", "triton", eager_ms / lrn_speedup,
                 speedup_vs_eager=lrn_speedup, roofline_fraction=0.85),
            _row("lrn1", "local_response_norm", "fwd+bwd", COMPILED, eager_ms / 3, speedup_vs_eager=3.0),
            _row("conv2", "conv2d", "fwd", EAGER, 1.0, speedup_vs_eager=1.0),
            _row("conv2", "conv2d", "fwd", "triton", 0.9, speedup_vs_eager=1 / 0.9),
            _row("conv2", "conv2d", "fwd+bwd", EAGER, 3.0, speedup_vs_eager=1.0),
            _row("conv2", "conv2d", "fwd+bwd", "triton", 3.4, speedup_vs_eager=3 / 3.4),  # backward 2.5 vs 2.0
        ]

    results = bench_kernels.evaluate_goals(rows(5.0))
    assert _goal(results, "LRN fwd+bwd >= 5x").status == "pass"
    assert _goal(results, "LRN fwd+bwd >= 1.5x torch.compile").status == "pass"  # 5 / 3
    assert _goal(results, "LRN fwd+bwd >= 80%").status == "pass"
    assert _goal(results, "conv2d+ReLU fwd").status == "pass"
    assert _goal(results, "conv2d+ReLU bwd").status == "pass"  # 2.0 / 2.5 = 0.8
    assert _goal(results, "max-pool").status == "no data"
    results = bench_kernels.evaluate_goals(rows(4.0))
    assert _goal(results, "LRN fwd+bwd >= 5x").status == "FAIL"
    assert _goal(results, "LRN fwd+bwd >= 1.5x torch.compile").status == "FAIL"  # 4 / 3


def test_dropout_goal_fails_when_the_graph_keeps_a_mask():
    def results(graph_bytes):
        return bench_kernels.evaluate_goals([_row("drop_big", "dropout", "fwd", "triton", 1.0, graph_bytes=graph_bytes,
                                                  shape="128x96x55x55")])

    elements = 128 * 96 * 55 * 55
    assert _goal(results(0), "dropout keeps no mask").status == "pass"
    assert _goal(results(elements), "dropout keeps no mask").status == "FAIL"  # PyTorch's 1-byte mask


def test_model_goal_is_bf16_tritonnet_over_eager():
    rows = [{"model": "alexnet", "provider": "tritonnet", "dtype": "bf16", "ms": 1.0, "speedup_vs_eager": 1.1},
            {"model": "alexnet-torchvision", "provider": "tritonnet", "dtype": "bf16", "ms": 1.0,
             "speedup_vs_eager": 1.3}]
    goal, _ = bench_model.evaluate_goals(rows)
    assert goal.status == "FAIL" and "alexnet" in goal.measured
    rows[0]["speedup_vs_eager"] = 1.25
    assert bench_model.evaluate_goals(rows)[0].status == "pass"


def test_loss_goal_passes_only_when_the_loss_falls():
    row = {"model": "alexnet", "provider": "tritonnet", "dtype": "bf16", "first_loss": 6.9, "last_loss": 6.9}
    assert bench_model.evaluate_goals([row])[1].status == "FAIL"
    row["last_loss"] = 6.5
    assert bench_model.evaluate_goals([row])[1].status == "pass"
    assert bench_model.evaluate_goals([])[1].status == "no data"


@pytest.mark.skipif(harness.ON_GPU, reason="the CPU timer")
def test_cpu_timing_reports_median_between_its_quantiles():
    timing = harness.measure(lambda: sum(range(10000)), warmup_ms=1, rep_ms=5)
    assert timing.method == "perf_counter" and 0 < timing.p20 <= timing.ms <= timing.p80


def test_chart_draws_ratios_and_skips_missing_values(tmp_path):
    path = tmp_path / "chart.png"
    harness.ratio_chart(str(path), "title", {"bf16": [("conv1 fwd", {"triton": 1.5, "torch.compile": None}),
                                                      ("lrn1 fwd+bwd", {"triton": float("nan"), "torch.compile": 0.7})],
                                             "fp32": []})
    width, height = _png_size(path)
    assert width > 200 and height > 100


def test_hypothesis_budget_caps_examples_but_keeps_smaller_settings(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from hypothesis import settings\n"
        "settings.register_profile('thorough', max_examples=200, deadline=None)\n"
        "settings.load_profile('thorough')\n")
    (tmp_path / "test_count.py").write_text(
        "import os\nfrom hypothesis import given, settings, strategies as st\nseen, fewer = [], []\n"
        "@given(st.integers())\ndef test_many(x):\n    seen.append(x)\n"
        "@settings(max_examples=2)\n@given(st.integers())\ndef test_few(x):\n    fewer.append(x)\n"
        "def test_zz_report():\n    open(os.environ['COUNT_FILE'], 'w').write(f'{len(seen)} {len(fewer)}')\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "TRITONNET_MAX_EXAMPLES": "7", "COUNT_FILE": str(tmp_path / "count")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "benchmarks.hypothesis_budget", "-p",
                           "no:cacheprovider", "test_count.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "count").read_text() == "7 2"


def test_every_case_runs_its_reference_on_tiny_shapes():
    """The torch.compile target of every case (plain torch.nn.functional) runs and keeps the public API's shape."""
    for case in bench_kernels.alexnet_cases(2, bench_kernels.SMOKE):
        tensors = case.make_tensors(torch.float32)
        expected = case.forward(tensors, EAGER)
        torch.manual_seed(0)
        assert case.reference(*tensors).shape == expected.shape, case.layer
