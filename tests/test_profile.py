"""The per-layer profiler: its JSON covers every layer and every provider, layers are timed on their real inputs
with the provider forced on them, warm-up is excluded, shares and speed-ups add up, and the table shows it all."""

import io
import json
import time

import pytest
import torch
from rich.console import Console

import tritonnet
from tests.helpers import DEVICE
from tests.spies import add_provider, every_op, record_calls
from tritonnet import nn as tnn
from tritonnet import profile, timing
from tritonnet.models import alexnet_small


@pytest.fixture(scope="module")
def cli_rows(tmp_path_factory):
    """``python -m tritonnet.profile`` on alexnet-small at batch 1, one timed run, every provider."""
    path = tmp_path_factory.mktemp("profile") / "rows.json"
    profile.main(["--model", "alexnet-small", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                  "--device", str(DEVICE), "--json", str(path)])
    return json.loads(path.read_text())


def test_json_covers_every_layer_and_every_provider(cli_rows):
    model = alexnet_small()
    layers = [name.rpartition(".")[2] for name, module in model.named_modules() if isinstance(module, (
        tnn.Conv2d, tnn.LocalResponseNorm, tnn.MaxPool2d, tnn.Linear))] + ["loss"]
    assert layers[:3] == ["conv1", "lrn1", "pool1"] and layers[-2:] == ["fc8", "loss"]
    providers = profile.all_providers()
    layer_rows = [row for row in cli_rows if row["kind"] != "step"]
    assert [(row["layer"], row["provider"]) for row in layer_rows] == [
        (layer, provider) for layer in layers for provider in providers]
    assert [row["provider"] for row in cli_rows if row["kind"] == "step"] == providers
    kernels = tritonnet.available_kernels()
    for row in cli_rows:
        assert {"layer", "kind", "shape", "provider", "forward_ms", "backward_ms", "share"} <= row.keys()
        if row["kind"] == "step" or row["provider"] in kernels[row["kind"].partition("+")[0]]:
            assert row["forward_ms"] > 0 and row["backward_ms"] > 0, row
        else:
            assert row["forward_ms"] is None and row["backward_ms"] is None, row
        assert row["device"] == str(DEVICE) and row["dtype"] == "float32" and row["repeats"] == 1


def test_layers_are_timed_on_their_real_inputs(cli_rows):
    torch_rows = {row["layer"]: row for row in cli_rows if row["provider"] == "torch" and row["kind"] != "step"}
    chain = ["conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert torch_rows["conv1"]["shape"] == [1, 3, 32, 32]
    for before, after in zip(chain, chain[1:]):
        assert torch_rows[after]["shape"] == torch_rows[before]["output_shape"]
    assert torch_rows["fc6"]["shape"] == [1, 64 * 3 * 3]
    assert torch_rows["loss"]["shape"] == [1, 10] and torch_rows["loss"]["output_shape"] == []
    assert torch_rows["conv1"]["kind"] == "conv2d+relu" and torch_rows["fc6"]["kind"] == "linear+relu+dropout"


def test_shares_sum_to_one_and_speedups_are_reference_over_provider(cli_rows):
    for provider in profile.all_providers():
        rows = [row for row in cli_rows if row["provider"] == provider and row["kind"] != "step"]
        assert sum(row["share"] or 0.0 for row in rows) == pytest.approx(1.0)
    reference = {(row["layer"], row["kind"]): row for row in cli_rows if row["provider"] == "torch"}
    for row in cli_rows:
        base = reference[(row["layer"], row["kind"])]
        if row["provider"] == "torch" or row["forward_ms"] is None:
            assert row["forward_speedup"] is None and row["backward_speedup"] is None
        else:
            assert row["forward_speedup"] == pytest.approx(base["forward_ms"] / row["forward_ms"])
            assert row["backward_speedup"] == pytest.approx(base["backward_ms"] / row["backward_ms"])


def test_the_provider_is_forced_on_each_layer_and_restored(monkeypatch):
    add_provider(monkeypatch, "spy", ops=["conv2d", "max_pool2d"])
    calls = record_calls(monkeypatch)
    model = alexnet_small().to(DEVICE)
    model.features.conv1.provider = "torch"  # a layer's own choice does not hide the provider being profiled
    rows = profile.profile_model(model, 1, ["spy"], repeats=1, warmup=0, whole_step=False)
    assert {op for op, provider in calls if provider == "spy"} == {"conv2d", "max_pool2d"}
    assert model.features.conv1.provider == "torch" and model.features.conv2.provider is None
    timed = {row.layer for row in rows if row.forward_ms is not None}
    assert timed == {"conv1", "conv2", "conv3", "conv4", "conv5", "pool1", "pool2", "pool5"}
    assert all(row.forward_ms is None and row.backward_ms is None and row.share is None
               for row in rows if row.layer not in timed)  # no "spy" kernel for them: n/a, not a fallback


def test_first_layer_input_needs_no_gradient_and_the_rest_do():
    model = alexnet_small().to(DEVICE)
    captured, logits = profile.capture_layer_inputs(model, torch.randn(2, 3, 32, 32, device=DEVICE))
    assert [layer.input_requires_grad for layer in captured] == [False] + [True] * (len(captured) - 1)
    assert logits.shape == (2, 10) and not logits.requires_grad


def test_measure_excludes_warmup_and_takes_the_median():
    delays = iter([0.3] + [0.001] * 20)
    assert timing.measure_ms(lambda _: time.sleep(next(delays)), device=torch.device("cpu"), repeats=3,
                             warmup=1) < 100
    delays = iter([0.3, 0.001, 0.3, 0.001, 0.001])
    assert timing.measure_ms(lambda _: time.sleep(next(delays)), device=torch.device("cpu"), repeats=5,
                             warmup=0) < 100
    prepared = []
    timing.measure_ms(lambda state: prepared.append(state), device=torch.device("cpu"), repeats=2, warmup=1,
                      prepare=lambda: len(prepared))
    assert prepared == [0, 1, 2]  # a fresh prepare() before each run, outside the timed region
    handed = []
    first, second = timing.measure_stages_ms(
        [lambda state: time.sleep(0.03) or state + 1, lambda state: handed.append(state)],
        device=torch.device("cpu"), repeats=2, warmup=0, prepare=lambda: 10)
    assert handed == [11, 11] and first >= 30 > second  # each stage timed on its own, fed by the one before
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timing.measure_ms(lambda _: None, device=torch.device("cpu"), repeats=0, warmup=0)


def test_profiler_and_benchmarks_time_and_name_dtypes_with_one_module():
    from benchmarks import harness

    assert harness.measure is timing.measure and harness.DTYPES is timing.DTYPES is profile.DTYPES
    assert profile.measure_stages_ms is timing.measure_stages_ms
    assert [timing.dtype_name(dtype) for dtype in timing.DTYPES.values()] == list(timing.DTYPES)
    with pytest.raises(ValueError, match="dtype must be one of"):
        timing.dtype_name(torch.int8)


def test_table_shows_every_layer_provider_and_missing_kernels(monkeypatch):
    add_provider(monkeypatch, "spy", ops=["conv2d"])
    model = alexnet_small().to(DEVICE)
    with tritonnet.use_kernels(**every_op("torch")):
        rows = profile.profile_model(model, 1, ["spy", "torch"], repeats=1, warmup=0)
    output = io.StringIO()
    Console(file=output, width=250).print(profile.table(rows))
    text = output.getvalue()
    for layer in ("conv1", "lrn1", "pool5", "fc8", "loss", "sum of layers", "whole step (measured)",
                  "spy", "speed-up fwd", "n/a", "leave out the layers"):
        assert layer in text, layer
    steps = [row for row in rows if row.kind == "step"]
    assert [row.provider for row in steps] == ["spy", "torch"]  # the configured kernels equal all-torch here


def test_configured_mix_gets_its_own_whole_step(monkeypatch):
    add_provider(monkeypatch, "spy", ops=["conv2d", "linear"])
    model = alexnet_small().to(DEVICE)
    model.classifier.fc8.provider = "spy"
    with tritonnet.use_kernels(**every_op("torch")):
        rows = profile.profile_model(model, 1, ["spy", "torch"], repeats=1, warmup=0)
    steps = {row.provider: row for row in rows if row.kind == "step"}
    assert set(steps) == {"spy", "torch", "configured"} and steps["configured"].configured
    fc8 = {row.provider: row.configured for row in rows if row.layer == "fc8"}
    assert fc8 == {"spy": True, "torch": False}


@pytest.mark.parametrize("argv, message", [
    (["--providers", "torch,cudnn"], "unknown provider 'cudnn'"),
    (["--kernels", "lrn=torch"], "unknown op 'lrn'"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--model", "vgg"], "invalid choice: 'vgg'"),
])
def test_command_line_errors_name_the_bad_value(capsys, argv, message):
    with pytest.raises(SystemExit):
        profile.main(argv)
    assert message in capsys.readouterr().err


def test_profile_model_refuses_unknown_providers():
    with pytest.raises(ValueError, match="unknown provider 'cuda'"):
        profile.profile_model(alexnet_small(), 1, ["cuda"])


def test_trace_labels_every_layer_with_its_name_and_provider(tmp_path):
    path = tmp_path / "trace.json"
    profile.main(["--model", "alexnet-small", "--batch-size", "1", "--repeats", "1", "--warmup", "0", "--no-step",
                  "--providers", "torch", "--kernels", "max_pool2d=torch", "--trace", str(path)])
    events = json.loads(path.read_text())["traceEvents"]
    names = {event.get("name", "") for event in events}
    assert "features.conv1 conv2d+relu [triton]" in names and "features.pool1 max_pool2d [torch]" in names
    assert any(name.startswith("loss cross_entropy [") for name in names)
    assert sum(name.startswith("classifier.fc8 linear [") for name in (event.get("name", "") for event in events)) == 3


def test_narrowed_providers_run_only_those_and_still_show_what_each_layer_uses():
    model = alexnet_small().to(DEVICE)
    rows = profile.profile_model(model, 1, ["torch"], repeats=1, warmup=0)
    steps = [row for row in rows if row.kind == profile.STEP]
    assert [row.provider for row in steps] == ["torch"]  # no Triton whole step behind the user's back
    assert {row.uses for row in rows if row.kind != profile.STEP} == {"triton"}
    output = io.StringIO()
    Console(file=output, width=250).print(profile.table(rows))
    body = output.getvalue().split("uses:")[0]  # the table above its caption; only the uses column says triton
    assert body.count(" triton ") == len({row.layer for row in rows if row.kind != profile.STEP})
