"""The training loop (tritonnet.train, examples/train_alexnet.py): outputs, exact resume, DDP, failures, Ctrl-C.

Most runs use PyTorch's reference kernels (--kernels all=torch) on a few hundred Fashion-MNIST images, for speed;
one runs the default (Triton) kernels end to end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tritonnet.train import (CPU_DEFAULTS, CPU_DEMO, EXIT_INTERRUPTED, EXIT_NAN, EXIT_OK, EXIT_USAGE, GPU_DEFAULTS,
                             GPU_FASHION_MNIST, INTERPRETER_COSTS, PAPER, TrainConfig, build_parser, main, shown)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "train_alexnet.py"
# 3 steps of 32 per epoch, 32 validation images, the CPU demo's recipe otherwise.
SMALL = ["--kernels", "all=torch", "--train-subset", "96", "--val-subset", "32", "-b", "32", "--lr", "0.02"]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(first: dict, second: dict, exact: bool = True) -> None:
    assert first.keys() == second.keys()
    for name in first:
        if exact:
            assert torch.equal(first[name], second[name]), name
        else:
            torch.testing.assert_close(first[name], second[name], rtol=1e-4, atol=1e-6, msg=name)


def run_subprocess(arguments: list[str], timeout: float = 120, **environment: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **environment}
    return subprocess.run(arguments, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def test_short_run_writes_metrics_curves_checkpoints_and_lowers_the_loss(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--train-subset", "192", "--epochs", "2", "--lr", "0.05", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "alexnet-small" in printed and "best val top-1" in printed
    logged = records(out / "metrics.jsonl")
    assert [record["epoch"] for record in logged] == [1, 2]
    for record in logged:
        assert {"epoch", "step", "train_loss", "val_loss", "val_top1", "val_top5", "images_per_sec",
                "lr"} <= set(record)
        assert 0 <= record["val_top1"] <= record["val_top5"] <= 100 and record["images_per_sec"] > 0
    assert logged[-1]["train_loss"] < logged[0]["train_loss"]
    assert logged[-1]["val_loss"] < np.log(10)  # below chance
    trace = records(out / "train.jsonl")  # a loss check after every step on a CPU
    assert [record["step"] for record in trace] == list(range(1, 13))
    assert trace[-1]["epoch"] == 2 and all(np.isfinite(record["train_loss"]) for record in trace)
    assert png_size(out / "curves.png")[0] > 500
    checkpoint = load(out / "checkpoint.pt")  # weights_only=True: tensors and plain containers only
    assert checkpoint["epoch"] == 2 and checkpoint["step_in_epoch"] == 0 and checkpoint["global_step"] == 12
    best = load(out / "best.pt")
    assert best["best_top1"] == max(record["val_top1"] for record in logged)

    # --evaluate --resume reproduces the logged accuracy of the checkpoint.
    assert main(["--kernels", "all=torch", "--evaluate", "--resume", str(out / "checkpoint.pt")]) == EXIT_OK
    evaluation = records(out / "evaluate.jsonl")[-1]
    assert evaluation["val_top1"] == logged[-1]["val_top1"] and evaluation["val_top5"] == logged[-1]["val_top5"]
    assert evaluation["val_loss"] == pytest.approx(logged[-1]["val_loss"], rel=1e-6)
    assert evaluation["step"] == logged[-1]["step"]


def test_default_triton_kernels_train_end_to_end(tmp_path, capsys):
    """No --kernels: every op's default provider (Triton, through the interpreter on a CPU), dropout included, in
    the channels-last layout a GPU run uses by default. In this process (tests/test_launch.py runs the ranks)."""
    out = tmp_path / "triton"
    assert main(["--single-process", "--train-subset", "16", "--val-subset", "8", "-b", "8", "--max-steps", "1",
                 "--dropout", "0.5", "--memory-format", "channels_last", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    import tritonnet

    expected = {op: providers[0] for op, providers in tritonnet.available_kernels().items()}
    assert "kernels: " + ",".join(f"{op}={provider}" for op, provider in expected.items()) in printed
    assert "channels_last memory format" in printed
    if tritonnet.INTERPRET and "triton" in expected.values():
        assert "Triton's interpreter" in printed and "--kernels all=torch" in printed
    logged = records(out / "metrics.jsonl")
    assert len(logged) == 1 and np.isfinite(logged[0]["val_loss"]) and logged[0]["step"] == 1


def test_resume_continues_exactly_with_dropout_and_augmentation(tmp_path):
    """2 steps, resume, 3 more (across an epoch boundary) == 5 steps straight: same weights, momenta, RNG."""
    common = [*SMALL, "--epochs", "3", "--dropout", "0.5", "--warmup-epochs", "0.5", "--augment"]
    assert main([*common, "--max-steps", "5", "--out", str(tmp_path / "straight")]) == EXIT_OK
    assert main([*common, "--max-steps", "2", "--out", str(tmp_path / "split")]) == EXIT_OK
    first_part = load(tmp_path / "split" / "checkpoint.pt")
    assert (first_part["epoch"], first_part["step_in_epoch"]) == (0, 2)
    assert main(["--kernels", "all=torch", "--resume", str(tmp_path / "split" / "checkpoint.pt"),
                 "--max-steps", "5"]) == EXIT_OK
    straight, resumed = load(tmp_path / "straight" / "checkpoint.pt"), load(tmp_path / "split" / "checkpoint.pt")
    assert resumed["global_step"] == straight["global_step"] == 5
    assert_same_tensors(straight["model"], resumed["model"])
    for name, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][name]["momentum_buffer"])
    assert torch.equal(straight["rng"][0]["torch"], resumed["rng"][0]["torch"])
    steps = [record["step"] for record in records(tmp_path / "split" / "metrics.jsonl")]
    assert steps == [2, 3, 5]  # the resumed run appends to the same log
    trace = [record["step"] for record in records(tmp_path / "split" / "train.jsonl")]
    assert trace == [1, 2, 3, 4, 5]


def test_resume_drops_log_records_written_after_the_checkpoint(tmp_path):
    """A run that died after logging past its last checkpoint: the resumed run's logs continue from the
    checkpoint's step, with no record of the lost steps left in them."""
    out = tmp_path / "run"
    assert main([*SMALL, "--max-steps", "2", "--out", str(out)]) == EXIT_OK
    for name in ("train.jsonl", "metrics.jsonl"):
        with open(out / name, "a") as file:  # what the lost steps 3 and 4 had logged
            file.write("".join(json.dumps({"step": step, "epoch": 0.5, "train_loss": 9.0}) + "\n" for step in (3, 4)))
    assert main(["--kernels", "all=torch", "--resume", str(out / "checkpoint.pt"), "--max-steps", "3"]) == EXIT_OK
    assert [record["step"] for record in records(out / "train.jsonl")] == [1, 2, 3]
    assert [record["step"] for record in records(out / "metrics.jsonl")] == [2, 3]
    assert all(record["train_loss"] != 9.0 for record in records(out / "train.jsonl"))


@pytest.mark.parametrize("backend", [
    "gloo",
    pytest.param("nccl", marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs a CUDA device "
                                                  "per rank, and this machine has fewer than 2")),
])
def test_two_ddp_processes_match_one_process_on_the_same_global_batch(tmp_path, backend):
    """gloo runs both ranks on the CPU (CUDA hidden), so it runs anywhere; NCCL gives each rank a GPU."""
    arguments = [*SMALL, "--train-subset", "128", "--max-steps", "3", "--dropout", "0", "--seed", "1", "--augment"]
    hide_cuda = {"CUDA_VISIBLE_DEVICES": ""} if backend == "gloo" else {}
    result = run_subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(EXAMPLE), *arguments, "--out", str(tmp_path / "ddp")], timeout=180, **hide_cuda)
    assert result.returncode == 0, result.stdout + result.stderr
    if hide_cuda and torch.cuda.is_available():  # the one-process run on the same device as the ranks
        result = run_subprocess([sys.executable, str(EXAMPLE), *arguments, "--out", str(tmp_path / "one")],
                                **hide_cuda)
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert main([*arguments, "--out", str(tmp_path / "one")]) == EXIT_OK
    two, one = load(tmp_path / "ddp" / "checkpoint.pt"), load(tmp_path / "one" / "checkpoint.pt")
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    assert_same_tensors(two["model"], one["model"], exact=False)
    ddp_record = records(tmp_path / "ddp" / "metrics.jsonl")[-1]
    one_record = records(tmp_path / "one" / "metrics.jsonl")[-1]
    assert ddp_record["val_images"] == one_record["val_images"] == 32
    assert ddp_record["train_loss"] == pytest.approx(one_record["train_loss"], rel=1e-5)
    assert ddp_record["val_loss"] == pytest.approx(one_record["val_loss"], rel=1e-5)
    assert result.stdout.count("best val top-1") == 1  # rank 0 alone prints


def test_bad_data_folder_stops_with_one_line_naming_it_and_keeps_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--max-steps", "1", "--out", str(out)]) == EXIT_OK
    saved = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    for folder, message in ((tmp_path / "missing", "does not exist"), (tmp_path, "has no train/ sub-folder")):
        assert main(["--kernels", "all=torch", "--resume", str(out / "checkpoint.pt"), "--data", str(folder)]) \
            == EXIT_USAGE
        printed = capsys.readouterr().out.strip()
        assert printed.startswith("error: ") and str(folder) in printed and message in printed
        assert "Traceback" not in printed and len(printed.splitlines()) == 1
    (tmp_path / "flat" / "train").mkdir(parents=True)
    assert main([*SMALL, "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "new")]) == EXIT_USAGE
    assert "has no class sub-folders" in capsys.readouterr().out
    assert (out / "checkpoint.pt").read_bytes() == saved


def test_corrupt_image_is_skipped_counted_and_training_goes_on(tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for index in range(4):
                Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(
                    tmp_path / "images" / split / name / f"{index}.png")
    (tmp_path / "images" / "train" / "b" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    out = tmp_path / "run"
    assert main(["--kernels", "all=torch", "--data", str(tmp_path / "images"), "--model", "alexnet-small", "-b", "9",
                 "--epochs", "1", "-j", "0", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "warning:" in printed and "corrupt.jpg" in printed and "1 skipped so far" in printed
    logged = records(out / "metrics.jsonl")
    assert logged[0]["corrupt_images"] == 1 and logged[0]["val_images"] == 8
    assert (out / "checkpoint.pt").is_file()


def test_nan_loss_stops_with_a_message_and_leaves_the_last_checkpoint_intact(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "1", "--out", str(out)]) == EXIT_OK
    saved, best = (out / "checkpoint.pt").read_bytes(), (out / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(["--kernels", "all=torch", "--resume", str(out / "checkpoint.pt"), "--epochs", "3",
                 "--lr", "1e30"]) == EXIT_NAN
    printed = capsys.readouterr().out
    assert "the training loss became" in printed and "is unchanged" in printed and "Traceback" not in printed
    assert (out / "checkpoint.pt").read_bytes() == saved and (out / "best.pt").read_bytes() == best


def test_sigint_saves_the_state_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(EXAMPLE), *SMALL, "--train-subset", "4096", "--epochs", "5",
                                "--out", str(out)], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:  # the last line printed before training starts
            lines.append(line)
            if line.startswith("outputs:"):
                break
        time.sleep(3.0)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    printed = "".join(lines) + rest
    assert process.returncode == EXIT_INTERRUPTED, printed
    assert "Stopped by SIGINT" in printed and "--resume" in printed and "Traceback" not in printed
    stopped = load(out / "checkpoint.pt")
    assert stopped["global_step"] > 0 and stopped["step_in_epoch"] == stopped["global_step"]
    target = stopped["global_step"] + 2
    assert main(["--kernels", "all=torch", "--resume", str(out / "checkpoint.pt"), "--max-steps", str(target)]) \
        == EXIT_OK
    assert load(out / "checkpoint.pt")["global_step"] == target


def test_unknown_kernel_provider_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--kernels", "conv2d=nonexistent", "--max-steps", "1"])
    assert stopped.value.code == EXIT_USAGE
    error = capsys.readouterr().err
    assert "--kernels" in error and "nonexistent" in error and "Traceback" not in error


def test_cpu_demo_recipe_fits_the_shipped_slice():
    assert CPU_DEMO["train_subset"] <= 10_000 and CPU_DEMO["val_subset"] >= 1_000  # the slice; the task's minimum
    assert CPU_DEMO["model"] == "alexnet-small"


def test_the_cpu_demo_is_planned_within_four_minutes_on_two_cores_with_a_margin():
    """The promise printed on the first line comes from this plan: the demo's size must leave room for a slow hour."""
    planned = INTERPRETER_COSTS.run_seconds(TrainConfig(**CPU_DEMO), CPU_DEMO["train_subset"], CPU_DEMO["val_subset"],
                                            ranks=2)
    assert planned <= 0.9 * 240, planned


def readme_flag_table() -> list[tuple[list[str], str]]:
    """The README's table of training flags: (the flags of a row, its default column)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| flag | meaning | default |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows.append((re.findall(r"`(-{1,2}[a-z][a-z0-9-]*)", cells[0]), cells[-1]))
    return rows


def help_default(action) -> str:
    """The ``(default: ...)`` of a flag's help, or "-" without one."""
    found = re.search(r"\(default: (.*)\)$", action.help or "")
    return found.group(1) if found else "-"


def test_readme_flag_table_agrees_with_help_and_the_presets():
    parser = build_parser()
    actions = {flag: action for action in parser._actions for flag in action.option_strings
               if action.dest != "help"}
    rows = readme_flag_table()
    in_readme = [flag for flags, _ in rows for flag in flags]
    assert sorted(in_readme) == sorted(actions), "flags in one of README.md and --help only"
    for flags, default in rows:
        assert default == help_default(actions[flags[0]]), flags
    # Each preset's values are the ones quoted: the paper's first, then the CPU demo's where they differ.
    quoted = {action.dest: help_default(action) for action in actions.values()}
    for name, value in CPU_DEMO.items():
        assert quoted[name].startswith(shown(PAPER.get(name))), name
        if shown(value) != shown(PAPER.get(name)):
            assert quoted[name].endswith(f"; {shown(value)} in the CPU demo"), name
    assert quoted["epochs"] == f"{PAPER['epochs']}; {GPU_FASHION_MNIST['epochs']} for Fashion-MNIST on a GPU; " \
                               f"{CPU_DEMO['epochs']} in the CPU demo"
    assert quoted["momentum"] == shown(TrainConfig().momentum) and quoted["print_every"] == \
        f"{GPU_DEFAULTS['print_every']} on a GPU; {CPU_DEFAULTS['print_every']} on a CPU"


def test_an_evaluation_reports_the_lr_of_the_last_step_trained(tmp_path):
    """A cosine schedule reaches 0 exactly at its end, which no step trains at: the metrics (and the summary table)
    show the last step's learning rate, as train.jsonl does."""
    out = tmp_path / "run"
    assert main([*SMALL, "--schedule", "cosine", "--epochs", "1", "--print-every", "1", "--out", str(out)]) == EXIT_OK
    steps = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    (evaluation,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert evaluation["lr"] == steps[-1]["lr"] > 0
