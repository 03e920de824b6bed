"""Fault injection: training runs killed with SIGKILL at seeded points, then resumed, end exactly where an
uninterrupted run ends.

Each run is a forked child of this process (no interpreter start-up, so the test stays quick) running
``tritonnet.train.main`` with PyTorch's reference kernels on 16 images. A kill point is the k-th write the run makes
(a checkpoint, best.pt, curves.png or a log line), hit before the write, half-way through it (a torn temporary file
or a torn log line) or just after it. After every kill the run folder must stay readable; the resumed run's weights,
optimizer state and logs must equal the uninterrupted run's, with every step logged exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import torch

from tritonnet import train as train_module
from tritonnet.train import EXIT_OK, main, read_records, temporary_path

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="needs fork (Linux)")

# 2 steps an epoch, 2 epochs, 3 steps in all: evaluations after steps 2 and 3; about 12 writes.
ARGUMENTS = ["--kernels", "all=torch", "--train-subset", "16", "--val-subset", "8", "-b", "8", "--epochs", "2",
             "--max-steps", "3", "--lr", "0.05", "--dropout", "0.5", "--augment"]
WRITES = 12
MODES = ("before", "torn", "after")
RUNS, KILLS_PER_RUN = 3, 2


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inject_fault(write_number: int, mode: str) -> None:
    """In the child: SIGKILL at the ``write_number``-th write, ``mode`` it (before, torn half-way, after)."""
    writes = iter(range(1, 1_000_000))
    write_atomic, log = train_module.write_atomic, train_module.Run.log

    def faulty_write_atomic(path, write):
        if next(writes) != write_number:
            return write_atomic(path, write)
        if mode == "torn":
            temporary = temporary_path(path)
            write(temporary)
            os.truncate(temporary, temporary.stat().st_size // 2)
        elif mode == "after":
            write_atomic(path, write)
        die()

    def faulty_log(self, record, file_name="metrics.jsonl"):
        if next(writes) != write_number:
            return log(self, record, file_name)
        if mode == "torn":
            with open(self.out / file_name, "a") as file:
                line = json.dumps(record)
                file.write(line[:len(line) // 2])
        elif mode == "after":
            log(self, record, file_name)
        die()

    train_module.write_atomic, train_module.Run.log = faulty_write_atomic, faulty_log


def forked_main(arguments: list[str], fault: tuple[int, str] | None = None) -> int:
    """``main(arguments)`` in a forked child (one thread, so every run sums in the same order); its exit status,
    or minus the signal that killed it."""
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        status = 99
        try:
            torch.set_num_threads(1)
            if fault is not None:
                inject_fault(*fault)
            status = main(arguments)
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def assert_readable(out: Path) -> None:
    """What a kill may leave: the files it wrote whole, a torn last log line, a stale temporary file. Never a
    torn checkpoint, best.pt or chart."""
    for name in ("checkpoint.pt", "best.pt"):
        if (out / name).exists():
            torch.load(out / name, map_location="cpu", weights_only=True)
    for name in ("metrics.jsonl", "train.jsonl"):
        read_records(out / name, warn=lambda message: None)
    if (out / "curves.png").exists():
        png = (out / "curves.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")


def logged(out: Path, name: str) -> list[dict]:
    """The log's records without what differs between runs (time, speed)."""
    return [{key: value for key, value in record.items() if key not in ("time", "images_per_sec")}
            for record in read_records(out / name, warn=lambda message: None)]


def test_runs_killed_at_random_writes_resume_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    assert forked_main([*ARGUMENTS, "--out", str(reference)]) == EXIT_OK
    expected = torch.load(reference / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert [record["step"] for record in logged(reference, "train.jsonl")] == [1, 2, 3]
    assert [record["step"] for record in logged(reference, "metrics.jsonl")] == [2, 3]
    kills = 0
    for run in range(RUNS):
        choices, out = random.Random(run), tmp_path / f"run{run}"
        faults = [(choices.randint(1, WRITES), choices.choice(MODES)) for _ in range(KILLS_PER_RUN)]
        for fault in [*faults, None]:
            # What a user does next: resume the run if it has a checkpoint, else start it again.
            started = (out / "checkpoint.pt").is_file()
            status = forked_main(["--resume", str(out)] if started else [*ARGUMENTS, "--out", str(out)], fault)
            if fault is None or status == EXIT_OK:  # a kill point past the run's last write: it finished
                assert status == EXIT_OK, (run, fault)
                break
            assert status == -signal.SIGKILL, (run, fault, status)
            kills += 1
            assert_readable(out)
        resumed = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert resumed["global_step"] == 3, (run, faults)
        for name, tensor in expected["model"].items():
            assert torch.equal(resumed["model"][name], tensor), (run, faults, name)
        for index, state in expected["optimizer"]["state"].items():
            assert torch.equal(resumed["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
        for name in ("train.jsonl", "metrics.jsonl"):  # every step exactly once, with the uninterrupted values
            assert logged(out, name) == logged(reference, name), (run, faults, name)
        assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
    assert kills >= RUNS  # the seeded kill points hit real writes
