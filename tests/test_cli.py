"""The shared command-line options: ``--kernels op=provider,...`` and model names in either spelling."""

import argparse

import pytest

import tritonnet
from tests.spies import add_provider
from tritonnet.cli import add_kernels_argument, describe_kernels


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train")
    add_kernels_argument(parser)
    return parser


def test_kernels_argument_parses_merges_and_defaults_to_nothing():
    assert _parser().parse_args([]).kernels == {}
    args = _parser().parse_args(["--kernels", "conv2d=torch, dropout=torch", "--kernels", "dropout=torch"])
    assert args.kernels == {"conv2d": "torch", "dropout": "torch"}
    assert _parser().parse_args(["--kernels", "all=torch"]).kernels == tritonnet.parse_kernels("all=torch")


def test_kernels_argument_applies_through_use_kernels(monkeypatch):
    add_provider(monkeypatch, "spy", ops=["local_response_norm"])
    args = _parser().parse_args(["--kernels=local_response_norm=spy"])
    with tritonnet.use_kernels(**args.kernels):
        assert tritonnet.provider_for("local_response_norm") == "spy"
        assert "local_response_norm=spy" in describe_kernels()
    assert tritonnet.provider_for("local_response_norm") != "spy"


@pytest.mark.parametrize("value, message", [
    ("lrn=torch", "unknown op 'lrn' in --kernels"),
    ("conv2d=cudnn", "unknown provider 'cudnn' for op 'conv2d' in --kernels"),
    ("conv2d", "malformed entry 'conv2d' in --kernels"),
    ("all=jax", "unknown provider 'jax' in --kernels"),
])
def test_kernels_argument_errors_name_the_entry(capsys, value, message):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--kernels", value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --kernels" in error and message in error


def test_describe_kernels_parses_back_and_help_lists_providers():
    assert tritonnet.parse_kernels(describe_kernels()) == {op: tritonnet.provider_for(op)
                                                         for op in tritonnet.available_kernels()}
    assert "local_response_norm: " in _parser().format_help().replace("\n", " ")


@pytest.mark.parametrize("spelling", ["alexnet-small", "alexnet_small"])
def test_every_command_line_naming_a_model_takes_both_spellings(spelling):
    from benchmarks import bench_model
    from tritonnet import profile
    from tritonnet.train import config_from_arguments

    assert config_from_arguments(["--model", spelling])[0].model == "alexnet-small"
    assert profile.build_parser().parse_args(["--model", spelling]).model == "alexnet-small"
    assert bench_model.parse_arguments(["--models", spelling, "alexnet_torchvision"]).models == [
        "alexnet-small", "alexnet-torchvision"]


def test_an_unknown_model_is_refused_by_every_command_line(capsys):
    from benchmarks import bench_model
    from tritonnet import profile
    from tritonnet.train import config_from_arguments

    for parse in (lambda: config_from_arguments(["--model", "alexnet_big"]),
                  lambda: profile.build_parser().parse_args(["--model", "alexnet_big"]),
                  lambda: bench_model.parse_arguments(["--models", "alexnet_big"])):
        with pytest.raises(SystemExit):
            parse()
        assert "invalid choice: 'alexnet-big'" in capsys.readouterr().err


def test_a_python_config_may_name_the_model_either_way():
    from tritonnet.train import TrainConfig, resolve

    assert resolve(TrainConfig(model="alexnet_small", data="synthetic"), on_gpu=False)[0].model == "alexnet-small"
