"""The training job never loses a run, never answers wrongly, and stops on bad input with one line (exit 2).

Every run here uses PyTorch's reference kernels (--kernels all=torch) on 16 Fashion-MNIST images in batches of 8
(2 steps an epoch) and evaluates 8: the properties are about files and messages, not kernels.
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tritonnet
from tritonnet import train as train_module
from tritonnet.data import write_idx
from tritonnet.train import EXIT_NAN, EXIT_OK, EXIT_USAGE, TrainConfig, UsageError, main, resolve

TINY = ["--kernels", "all=torch", "--train-subset", "16", "--val-subset", "8", "-b", "8", "--lr", "0.02"]
RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl", "train.jsonl", "curves.png")


def steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` (hidden ones included) and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def one_line_error(capsys, *needles: str) -> str:
    """The error line the run ended with (after what it printed before it), checked for ``needles``."""
    captured = capsys.readouterr()
    printed = captured.out.strip()
    assert "Traceback" not in printed + captured.err
    line = printed.splitlines()[-1]
    assert line.startswith("error: "), printed
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.fixture(scope="module")
def run_with_older_best(tmp_path_factory) -> Path:
    """A run at step 4 whose best.pt is the step-2 state (as when the later evaluation scored lower)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main([*TINY, "--epochs", "3", "--max-steps", "2", "--out", str(out)]) == EXIT_OK
    older = (out / "checkpoint.pt").read_bytes()
    assert main(["--resume", str(out), "--max-steps", "4"]) == EXIT_OK  # a run folder resumes its checkpoint.pt
    (out / "best.pt").write_bytes(older)
    assert load(out / "checkpoint.pt")["global_step"] == 4 and steps(out / "metrics.jsonl") == [2, 4]
    return out


def test_evaluating_writes_none_of_the_run_files(run_with_older_best, capsys):
    out = run_with_older_best
    before = snapshot(out)
    assert main(["--evaluate", "--resume", str(out / "best.pt")]) == EXIT_OK
    after = snapshot(out)
    assert {name: after[name] for name in before} == before and set(after) - set(before) == {"evaluate.jsonl"}
    evaluation = json.loads((out / "evaluate.jsonl").read_text())
    assert evaluation["step"] == 2 and evaluation["checkpoint"] == str(out / "best.pt")
    (out / "evaluate.jsonl").unlink()


def test_resuming_an_older_checkpoint_in_place_is_refused_and_forks_into_a_new_out(run_with_older_best, capsys,
                                                                                      tmp_path):
    out = run_with_older_best
    before = snapshot(out)
    capsys.readouterr()
    assert main(["--resume", str(out / "best.pt"), "--max-steps", "6"]) == EXIT_USAGE
    one_line_error(capsys, "is at step 2", "is at step 4", "--out")
    assert snapshot(out) == before
    fork = tmp_path / "fork"
    assert main(["--resume", str(out / "best.pt"), "--out", str(fork), "--max-steps", "3"]) == EXIT_OK
    assert snapshot(out) == before
    assert steps(fork / "train.jsonl") == [1, 2, 3] and steps(fork / "metrics.jsonl") == [2, 3]
    assert load(fork / "checkpoint.pt")["global_step"] == 3 and (fork / "best.pt").is_file()


def test_a_new_run_refuses_an_out_holding_a_run_and_clears_stale_temporary_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--max-steps", "1", "--out", str(out)]) == EXIT_OK
    before = snapshot(out)
    capsys.readouterr()
    assert main([*TINY, "--max-steps", "1", "--out", str(out)]) == EXIT_USAGE
    one_line_error(capsys, f"--out {out} already holds a run", f"--resume {out}")
    assert snapshot(out) == before
    killed = tmp_path / "killed"  # a run killed while writing its first checkpoint
    killed.mkdir()
    (killed / ".checkpoint.pt.tmp").write_bytes(b"torn")
    assert main([*TINY, "--max-steps", "1", "--out", str(killed)]) == EXIT_OK
    assert not (killed / ".checkpoint.pt.tmp").exists() and load(killed / "checkpoint.pt")["global_step"] == 1


def test_a_new_run_is_resumable_from_its_first_step(tmp_path, monkeypatch):
    """checkpoint.pt exists before the first step: a run killed at once can be resumed, not only restarted."""
    out = tmp_path / "run"

    def killed(self, *arguments):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module.Run, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        main([*TINY, "--max-steps", "1", "--out", str(out)])
    assert load(out / "checkpoint.pt")["global_step"] == 0 and sorted(path.name for path in out.iterdir()) == [
        "checkpoint.pt"]


def _nan_validation(monkeypatch):
    def evaluate(self):
        return {"val_loss": math.nan, "val_top1": 10.0, "val_top5": 50.0, "val_images": 8}

    monkeypatch.setattr(train_module.Run, "evaluate", evaluate)


def test_a_nan_validation_loss_stops_before_anything_is_written(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "2", "--max-steps", "2", "--out", str(out)]) == EXIT_OK
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        _nan_validation(patch)
        assert main(["--resume", str(out), "--max-steps", "4"]) == EXIT_NAN
    printed = capsys.readouterr().out
    assert "the validation loss became nan at step 4" in printed and "(step 2), is unchanged" in printed
    assert {name: data for name, data in snapshot(out).items() if name != "train.jsonl"} == {
        name: data for name, data in before.items() if name != "train.jsonl"}
    assert main(["--resume", str(out), "--max-steps", "4"]) == EXIT_OK  # the kept checkpoint resumes
    assert steps(out / "metrics.jsonl") == [2, 4] and steps(out / "train.jsonl") == [1, 2, 3, 4]

    first = tmp_path / "first"  # NaN at the first evaluation: no best.pt, no metrics, the step-0 checkpoint only
    _nan_validation(monkeypatch)
    assert main([*TINY, "--max-steps", "1", "--out", str(first)]) == EXIT_NAN
    assert not (first / "best.pt").exists() and not (first / "metrics.jsonl").exists()
    assert load(first / "checkpoint.pt")["global_step"] == 0


def test_non_finite_weights_are_never_saved(tmp_path, capsys, monkeypatch):
    """A finite loss whose update overflows the weights: the stop check refuses to save them."""
    out = tmp_path / "run"
    original = train_module.Run.train_step

    def overflowing(self, images, labels, lr):
        result = original(self, images, labels, lr)
        with torch.no_grad():
            next(self.model.parameters()).fill_(math.inf)
        return result

    monkeypatch.setattr(train_module.Run, "train_step", overflowing)
    monkeypatch.setattr(train_module.Run, "evaluate", lambda self: {"val_loss": 1.0, "val_top1": 10.0,
                                                                      "val_top5": 50.0, "val_images": 8})
    assert main([*TINY, "--max-steps", "1", "--out", str(out)]) == EXIT_NAN
    assert "the weights are no longer finite" in capsys.readouterr().out
    state = load(out / "checkpoint.pt")
    assert state["global_step"] == 0 and all(torch.isfinite(value).all() for value in state["model"].values())


def test_a_torn_last_log_line_is_dropped_with_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "2", "--max-steps", "2", "--out", str(out)]) == EXIT_OK
    for name in ("train.jsonl", "metrics.jsonl"):
        with open(out / name, "a") as file:
            file.write('{"epoch": 1.5, "step": 3, "train_lo')  # the disk filled up mid-line
    capsys.readouterr()
    assert main(["--resume", str(out), "--max-steps", "3"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "dropped the torn last line of" in printed and "train.jsonl" in printed and "metrics.jsonl" in printed
    assert steps(out / "train.jsonl") == [1, 2, 3] and steps(out / "metrics.jsonl") == [2, 3]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    lines.insert(0, "{not json")
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["--resume", str(out), "--max-steps", "4"]) == EXIT_USAGE
    one_line_error(capsys, "metrics.jsonl line 1 is not a log record")


def test_resume_restores_the_kernel_providers_and_memory_format(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--memory-format", "channels_last", "--max-steps", "1", "--out", str(out)]) == EXIT_OK
    saved = load(out / "checkpoint.pt")["args"]
    assert saved["kernels"] == tritonnet.parse_kernels("all=torch") and saved["memory_format"] == "channels_last"
    capsys.readouterr()
    assert main(["--resume", str(out), "--max-steps", "2"]) == EXIT_OK  # no --kernels: the checkpoint's
    printed = capsys.readouterr().out
    assert "kernels: " + ",".join(f"{op}=torch" for op in tritonnet.available_kernels()) in printed
    assert "channels_last memory format" in printed and "note: --kernels" not in printed
    assert load(out / "checkpoint.pt")["args"]["kernels"] == saved["kernels"]


def test_a_flag_given_again_on_resume_wins_with_a_note():
    saved = {**train_module.dataclasses.asdict(TrainConfig()), "kernels": tritonnet.parse_kernels("all=torch"),
             "memory_format": "channels_last", "lr": 0.02, "batch_size": 8, "train_subset": 16}
    notes = []
    default = tritonnet.available_kernels()["conv2d"][0]
    config = TrainConfig(lr=0.5, kernels={"conv2d": default}, memory_format="contiguous")
    resolved, _ = resolve(config, False, saved, {"lr", "kernels", "memory_format"}, notes.append)
    assert resolved.lr == 0.5 and resolved.memory_format == "contiguous" and resolved.batch_size == 8
    assert resolved.kernels == {**saved["kernels"], "conv2d": default}
    assert "--lr 0.5 overrides the checkpoint's 0.02" in notes
    assert "--memory-format contiguous overrides the checkpoint's channels_last" in notes
    assert any(note.startswith(f"--kernels conv2d={default}") for note in notes) == (default != "torch")
    with pytest.raises(UsageError, match="--batch-size 16 differs from the checkpoint's 8"):
        resolve(TrainConfig(batch_size=16), False, saved, {"batch_size"})


def test_changing_the_batch_size_on_resume_is_refused_with_the_reason(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "2", "--max-steps", "2", "--out", str(out)]) == EXIT_OK
    before = snapshot(out)
    capsys.readouterr()
    assert main(["--resume", str(out), "-b", "4"]) == EXIT_USAGE
    one_line_error(capsys, "--batch-size 4 differs from the checkpoint's 8", "steps of 8 images")
    assert snapshot(out) == before


def test_channels_last_trains_as_contiguous_does(tmp_path):
    outs = {}
    for layout in ("contiguous", "channels_last"):
        outs[layout] = tmp_path / layout
        assert main([*TINY, "--memory-format", layout, "--max-steps", "2", "--out", str(outs[layout])]) == EXIT_OK
    contiguous, channels_last = (load(outs[layout] / "checkpoint.pt")["model"] for layout in outs)
    for name in contiguous:
        torch.testing.assert_close(channels_last[name], contiguous[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1"], "--lr must be greater than 0, got -1.0"),
    (["--lr", "nan"], "--lr must be greater than 0, got nan"),
    (["--momentum", "-1"], "--momentum must be in [0, 1), got -1.0"),
    (["--seed", "-1"], "--seed must be in [0, 2147483648), got -1"),
    (["-j", "-1"], "-j/--workers must be at least 0, got -1"),
    (["--label-smoothing", "2"], "--label-smoothing must be in [0, 1), got 2.0"),
    (["--max-steps", "0"], "--max-steps must be at least 1, got 0"),
    (["--max-steps", "-1"], "--max-steps must be at least 1, got -1"),
    (["--train-subset", "0"], "--train-subset must be at least 1, got 0"),
    (["--val-subset", "0"], "--val-subset must be at least 1, got 0"),
    (["--val-subset", "-5"], "--val-subset must be at least 1, got -5"),
    (["--train-subset", "-5"], "--train-subset must be at least 1, got -5"),
    (["--weight-decay", "-1"], "--weight-decay must be at least 0"),
    (["--print-every", "0"], "--print-every must be at least 1"),
    (["--lr-steps", "-1"], "--lr-steps must be epochs"),
    (["--ranks", "0"], "--ranks must be at least 1, got 0"),
])
def test_impossible_settings_are_refused_with_one_line(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main([*TINY, *flags, "--out", str(out)]) == EXIT_USAGE
    one_line_error(capsys, message)
    assert not out.exists()


def _idx_folder(root: Path, train_labels: list[int], test_labels: list[int]) -> Path:
    root.mkdir(parents=True)
    for split, labels in (("train", train_labels), ("t10k", test_labels)):
        pixels = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", pixels)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.array(labels, dtype=np.uint8))
    return root


def test_bad_data_is_refused_with_one_line(tmp_path, capsys):
    gaps = _idx_folder(tmp_path / "gaps", [0, 1, 255, 1] * 4, [0, 1])
    assert main([*TINY, "--data", str(gaps), "--out", str(tmp_path / "a")]) == EXIT_USAGE
    one_line_error(capsys, "has labels up to 255 but no training image of class 2")
    torn = _idx_folder(tmp_path / "torn", [0, 1] * 8, [0, 1])
    (torn / "t10k-images-idx3-ubyte.gz").write_bytes((torn / "t10k-images-idx3-ubyte.gz").read_bytes()[:40])
    assert main([*TINY, "--data", str(torn), "--out", str(tmp_path / "b")]) == EXIT_USAGE
    one_line_error(capsys, "t10k-images-idx3-ubyte.gz")
    empty = _idx_folder(tmp_path / "empty", [], [0])
    assert main([*TINY, "--data", str(empty), "--out", str(tmp_path / "c")]) == EXIT_USAGE
    one_line_error(capsys, "holds no images")


def test_an_image_folder_with_no_usable_image_is_an_error(tmp_path, capsys):
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for index in range(2):
                (tmp_path / "images" / split / name / f"{index}.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    out = tmp_path / "run"
    assert main(["--kernels", "all=torch", "--data", str(tmp_path / "images"), "--model", "alexnet-small", "-b", "4",
                 "-j", "0", "--out", str(out)]) == EXIT_USAGE
    one_line_error(capsys, "none of the 4 training images could be used")
    assert not (out / "best.pt").exists() and not (out / "metrics.jsonl").exists()


def test_resuming_a_checkpoint_of_another_model_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--max-steps", "1", "--out", str(out)]) == EXIT_OK
    before = snapshot(out)
    three_classes = _idx_folder(tmp_path / "three", [0, 1, 2, 1] * 4, [0, 2])
    capsys.readouterr()
    assert main(["--resume", str(out), "--data", str(three_classes), "--max-steps", "2"]) == EXIT_USAGE
    one_line_error(capsys, f"cannot resume {out / 'checkpoint.pt'}: it holds a alexnet-small",
                   "for 3 classes built here")
    assert snapshot(out) == before


def test_resume_of_a_missing_path_or_a_folder_without_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["--resume", str(tmp_path / "missing.pt")]) == EXIT_USAGE
    one_line_error(capsys, "missing.pt does not exist")
    assert main(["--resume", str(tmp_path)]) == EXIT_USAGE
    one_line_error(capsys, "is a folder without a checkpoint.pt")


def test_an_out_that_is_a_file_or_read_only_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("mine")
    assert main([*TINY, "--out", str(tmp_path / "file")]) == EXIT_USAGE
    one_line_error(capsys, "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "mine"

    def read_only(self, *arguments, **keywords):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main([*TINY, "--out", str(tmp_path / "new")]) == EXIT_USAGE
    one_line_error(capsys, f"cannot write {tmp_path / 'new'}: Read-only file system")


def test_a_full_disk_keeps_the_old_checkpoint_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "2", "--max-steps", "1", "--out", str(out)]) == EXIT_OK
    before = snapshot(out)
    save = torch.save

    def full_disk(state, path, *arguments, **keywords):
        save(state, path, *arguments, **keywords)
        with open(path, "r+b") as file:
            file.truncate(1000)  # what fitted
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module.torch, "save", full_disk)
    capsys.readouterr()
    assert main(["--resume", str(out), "--max-steps", "2"]) == EXIT_USAGE
    one_line_error(capsys, "No space left on device", "is as it was")
    after = snapshot(out)
    assert after["checkpoint.pt"] == before["checkpoint.pt"] and after["best.pt"] == before["best.pt"]
    assert not [name for name in after if name.endswith(".tmp")]
    monkeypatch.undo()
    assert main(["--resume", str(out), "--max-steps", "2"]) == EXIT_OK  # space freed: the run goes on
    assert steps(out / "train.jsonl") == [1, 2] and steps(out / "metrics.jsonl") == [1, 2]


def test_a_torchrun_rank_without_a_gpu_of_its_own_is_one_line(monkeypatch, capsys):
    """Two ranks on a one-GPU machine: set_device(1) would fail with "invalid device ordinal"."""
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(TINY) == EXIT_USAGE
    one_line_error(capsys, "local rank 1 needs a CUDA device of its own, and this machine has 1")


def test_bad_labels_found_on_the_device_stop_as_a_data_error(monkeypatch):
    """On a GPU cross_entropy leaves its verdict on bad class indices for the loop's loss checks: they surface as a
    one-line DataError naming the labels, not as the NaN loss they caused."""
    from tritonnet import train

    def deferred():
        raise ValueError("target held 1 class index in [12, 12] outside [0, 10)")

    monkeypatch.setattr(train, "raise_deferred_target_errors", deferred)
    with pytest.raises(train.DataError, match=r"labels do not fit the model: target held 1 class index"):
        train.raise_bad_targets()
    monkeypatch.setattr(train, "raise_deferred_target_errors", lambda: None)
    train.raise_bad_targets()
