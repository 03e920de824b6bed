"""One training process per core: how ``examples/train_alexnet.py`` uses every core of a machine without a GPU.

Triton's interpreter runs a kernel on one thread (numpy, one BLAS thread), so a single training process leaves every
other core idle. Two processes side by side each run at the speed of one alone, so the command line starts one
data-parallel rank per core (gloo, as under ``torchrun``: the global batch is split across the ranks, their gradients
are averaged, rank 0 alone prints and writes) and supervises them:

- the ranks run in a process group of their own, so a Ctrl-C reaches this process once and is passed on once (a
  second Ctrl-C, passed on too, stops them at once, as in one process); SIGTERM likewise;
- a rank that fails stops the others (they would wait for it in the next all-reduce) and its last lines are shown;
- the exit status is rank 0's, or the failed rank's;
- a rank whose launcher dies (even by SIGKILL) gets SIGTERM, and saves and stops.

Same seed, same number of ranks: the same weights, and ``--resume`` continues exactly (the checkpoint holds every
rank's random state, and resuming starts as many ranks as it was saved with unless ``--ranks`` says otherwise).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Seconds a rank that failed leaves the others to stop by themselves (a bad flag stops every rank at once) before
# they are killed: past it they are blocked in a collective waiting for the failed rank.
FAILURE_GRACE_SECONDS = 3.0
# Lines of a failed rank's output shown (ranks other than 0 write to a file; rank 0 to the terminal).
FAILURE_LINES = 15
# The command line's exit statuses (train re-exports them): done, stopped on a non-finite loss, refused its arguments,
# stopped by a signal (SIGINT or SIGTERM, after saving).
EXIT_OK, EXIT_NAN, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_ranks(batch_size: int, cores: int) -> int:
    """One rank per core, as many as split ``batch_size`` evenly (every rank takes the same share)."""
    return max(ranks for ranks in range(1, max(1, min(cores, batch_size)) + 1) if batch_size % ranks == 0)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _terminate_with_parent() -> None:
    """In a rank, before it runs: SIGTERM when the launcher dies (Linux's PR_SET_PDEATHSIG), so no rank outlives it.
    Also a new session, so the terminal's Ctrl-C reaches the launcher alone."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def run_ranks(argv: list[str], ranks: int, print_error) -> int:
    """Run ``train_alexnet.py argv`` as ``ranks`` processes and return the exit status (see the module doc)."""
    package_root = str(Path(__file__).resolve().parent.parent)
    environment = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                   "WORLD_SIZE": str(ranks), "PYTHONPATH": os.pathsep.join(
                       [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    environment.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // ranks)))
    command = [sys.executable, "-c", "import sys; from tritonnet.train import main; sys.exit(main(sys.argv[1:]))",
               *argv]
    logs = Path(tempfile.mkdtemp(prefix="tritonnet-ranks-"))
    processes: list[subprocess.Popen] = []
    previous_handlers = {}

    def forward(number, frame):
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(number)

    for number in (signal.SIGINT, signal.SIGTERM):
        previous_handlers[number] = signal.signal(number, forward)
    try:
        for rank in range(ranks):
            output = None if rank == 0 else open(logs / f"rank{rank}.log", "w")
            processes.append(subprocess.Popen(
                command, env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdout=output,
                stderr=subprocess.STDOUT if output else None, preexec_fn=_terminate_with_parent))
            if output:
                output.close()
        status = _supervise(processes, logs, print_error)
    finally:
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    shutil.rmtree(logs, ignore_errors=True)
    return status


def _supervise(processes: list[subprocess.Popen], logs: Path, print_error) -> int:
    """Wait for every rank; when one fails, give the others :data:`FAILURE_GRACE_SECONDS`, then kill them."""
    failures: list[int] = []  # ranks in the order they failed
    killed: set[int] = set()
    failed_at = None
    while None in [process.poll() for process in processes]:  # every rank polled each time
        # A rank killed by a signal is the cause when its peers fail in the same moment (their collectives break).
        failures += sorted((rank for rank, process in enumerate(processes)
                            if process.returncode not in (None, EXIT_OK, EXIT_INTERRUPTED) and rank not in failures),
                           key=lambda rank: processes[rank].returncode >= 0)
        if failures and failed_at is None:
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > FAILURE_GRACE_SECONDS:
            for rank, process in enumerate(processes):
                if process.poll() is None:
                    process.kill()
                    killed.add(rank)
            for process in processes:
                process.wait()
        time.sleep(0.1)
    failures += [rank for rank, process in enumerate(processes)
                 if process.returncode not in (EXIT_OK, EXIT_INTERRUPTED) and rank not in failures and rank not in killed]
    if not failures:
        return processes[0].returncode
    rank = failures[0]
    if processes[0].returncode == EXIT_USAGE and processes[rank].returncode > 0:
        rank = 0  # a refused flag or file stops every rank with the same line, rank 0's among them: it is the answer
    code = processes[rank].returncode
    if rank != 0 or code < 0:  # rank 0's own message is on the terminal already
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"stopped with exit status {code}"
        log = logs / f"rank{rank}.log"
        tail = log.read_text(errors="replace").splitlines()[-FAILURE_LINES:] if log.is_file() else []
        print_error(f"rank {rank} of {len(processes)} {how}, so every rank was stopped"
                    + (". Its last lines:\n" + "\n".join(tail) if tail else ""))
    return code if code > 0 else 128 - code
