"""The shared ``--kernels op=provider,...`` command-line option."""

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
