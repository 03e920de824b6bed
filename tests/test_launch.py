"""The command line's rank processes (tritonnet.launch): one per core by default without a GPU, deterministic, resumed
exactly, stopped cleanly by Ctrl-C, and stopped together when one rank fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tritonnet
from tritonnet import launch
from tritonnet.train import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TrainConfig, config_from_arguments, ranks_to_start

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "train_alexnet.py"
# The default (Triton) kernels on a few images: 2 ranks of 2 images per step.
TINY = ["--train-subset", "64", "--val-subset", "8", "-b", "4", "--lr", "0.02", "--dropout", "0.5", "--ranks", "2"]

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="the rank processes are the CPU default"),
              pytest.mark.xdist_group("launch")]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")} | {
        "PYTHONUNBUFFERED": "1"}


def train(arguments: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *arguments], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("batch, cores, expected", [(32, 2, 2), (32, 3, 2), (30, 4, 3), (1, 8, 1), (32, 1, 1),
                                                    (7, 2, 1), (128, 16, 16)])
def test_default_ranks_are_one_per_core_that_split_the_batch_evenly(batch, cores, expected):
    assert launch.default_ranks(batch, cores) == expected


def test_the_command_line_starts_one_rank_per_core_only_while_the_interpreter_runs_triton_kernels(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(launch, "usable_cores", lambda: 2)
    triton_kernels = tritonnet.INTERPRET
    config, explicit = config_from_arguments([])
    assert ranks_to_start(config, explicit)[0] == (2 if triton_kernels else 1)
    config, explicit = config_from_arguments(["--kernels", "all=torch"])
    assert ranks_to_start(config, explicit)[0] == 1  # torch's kernels use every core in one process
    config, explicit = config_from_arguments(["--single-process"])
    assert config.ranks == 1 and ranks_to_start(config, explicit)[0] == 1
    config, explicit = config_from_arguments(["--ranks", "4", "--kernels", "all=torch"])
    assert ranks_to_start(config, explicit)[0] == 4
    monkeypatch.setenv("WORLD_SIZE", "2")  # already a rank (of torchrun or of ours): never starts more
    assert ranks_to_start(TrainConfig(ranks=4), {"ranks"})[0] == 1


def test_bad_rank_counts_are_one_line(tmp_path):
    result = train(["--ranks", "0", "--out", str(tmp_path / "zero")])
    assert result.returncode == EXIT_USAGE and result.stdout.strip() == "error: --ranks must be at least 1, got 0"
    result = train(["--ranks", "3", "-b", "32", "--kernels", "all=torch", "--out", str(tmp_path / "uneven")])
    assert result.returncode == EXIT_USAGE
    assert "--batch-size 32 must be a positive multiple of the 3 ranks" in result.stdout
    assert result.stdout.count("error:") == 1, result.stdout  # rank 0 alone prints


def test_a_refusal_every_rank_makes_is_shown_once_whichever_rank_stops_first(tmp_path):
    """Rank 0 refuses last (its peers refuse first): its one line is the answer, no "rank 1 stopped" after it."""
    def rank(delay):
        return subprocess.Popen([sys.executable, "-c", f"import time, sys; time.sleep({delay}); sys.exit({EXIT_USAGE})"])
    shown = []
    processes = [rank(1.0), rank(0.0)]
    assert launch._supervise(processes, tmp_path, shown.append) == EXIT_USAGE and shown == []
    processes = [rank(0.0), subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])]
    assert launch._supervise(processes, tmp_path, shown.append) == EXIT_USAGE and shown == []
    processes = [rank(0.5), subprocess.Popen([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])]
    assert launch._supervise(processes, tmp_path, shown.append) == 128 + 9  # a killed rank is the cause
    assert shown == ["rank 1 of 2 was killed by SIGKILL, so every rank was stopped"]


def test_ranks_are_deterministic_and_resume_exactly(tmp_path):
    """Two ranks with the Triton kernels and dropout, run twice from the same seed: 3 steps straight, and 2 steps,
    resume, 1 more. The same weights and random states, bit for bit."""
    straight = train([*TINY, "--max-steps", "3", "--out", str(tmp_path / "straight")])
    assert straight.returncode == EXIT_OK, straight.stdout + straight.stderr
    split = train([*TINY, "--max-steps", "2", "--out", str(tmp_path / "split")])
    assert split.returncode == EXIT_OK, split.stdout + split.stderr
    resumed = train(["--resume", str(tmp_path / "split"), "--max-steps", "3"])  # as many ranks as it was saved with
    assert resumed.returncode == EXIT_OK, resumed.stdout + resumed.stderr
    first, second = (load(tmp_path / name / "checkpoint.pt") for name in ("straight", "split"))
    assert first["world_size"] == second["world_size"] == 2 and len(second["rng"]) == 2
    assert second["args"]["ranks"] == 2 and second["global_step"] == 3
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    for rank in range(2):
        assert torch.equal(first["rng"][rank]["torch"], second["rng"][rank]["torch"])
    assert straight.stdout.count("best val top-1") == 1  # rank 0 alone prints


def test_ctrl_c_stops_every_rank_with_a_checkpoint_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(EXAMPLE), *TINY, "--train-subset", "4096", "--out", str(out)],
                               cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # a terminal's foreground job: Ctrl-C goes to its group
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "epoch 1/1" in line or line.startswith("outputs:"):
                break
        time.sleep(5.0)
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    printed = "".join(lines) + rest
    assert process.returncode == EXIT_INTERRUPTED, printed
    assert printed.count("Stopped by SIGINT") == 1 and "Traceback" not in printed, printed
    stopped = load(out / "checkpoint.pt")
    assert stopped["world_size"] == 2 and stopped["global_step"] > 0
    resumed = train(["--resume", str(out), "--max-steps", str(stopped["global_step"] + 1)])
    assert resumed.returncode == EXIT_OK, resumed.stdout + resumed.stderr
    assert load(out / "checkpoint.pt")["global_step"] == stopped["global_step"] + 1


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc")
def test_a_rank_that_dies_stops_every_rank_with_its_name(tmp_path):
    process = subprocess.Popen([sys.executable, str(EXAMPLE), *TINY, "--train-subset", "4096", "--out",
                                str(tmp_path / "run")], cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if "epoch 1/1" in line or line.startswith("outputs:"):
                break
        ranks = _children(process.pid)
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGKILL)
        started = time.monotonic()
        rest, _ = process.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        process.kill()
    assert process.returncode != 0
    assert "rank 1 of 2 was killed by SIGKILL, so every rank was stopped" in rest, rest
    assert waited < 30  # not gloo's 30-minute timeout
    assert not any(Path(f"/proc/{rank}").exists() and "zombie" not in Path(f"/proc/{rank}/status").read_text()
                   for rank in ranks)
