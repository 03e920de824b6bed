"""Training AlexNet with tritonnet's kernels: the loop behind ``examples/train_alexnet.py``.

The paper's recipe (Krizhevsky et al. 2012, section 5; docs/alexnet.md): SGD with momentum 0.9 and weight decay 5e-4,
batch 128, learning rate 0.01 divided by 10 on a step schedule (``--schedule step --lr-steps ...``) or when the
validation accuracy stops improving (``--schedule plateau``), dropout 0.5 in fc6 and fc7, the model's own
initialisation (the paper's for ``alexnet``). That is the default on a GPU. Without a GPU the default is a short demo
recipe sized for the Triton interpreter on a 2-core CPU (see :data:`CPU_DEMO` for what differs and why).

Flags follow PyTorch's ImageNet example; :func:`main` is the command line, :func:`train` runs a :class:`TrainConfig`.
Outputs go to ``--out`` (default ``runs/<model>-<time>``):

- ``metrics.jsonl``: one JSON object per evaluation (epoch, step, train_loss, train_top1, val_loss, val_top1,
  val_top5, images_per_sec, lr, ...); ``train.jsonl``: one per loss check while training (epoch, step, train_loss
  and train_top1 since the previous check, images_per_sec, lr); ``curves.png``: loss and accuracy against epochs
  (training from train.jsonl, validation from metrics.jsonl), redrawn after each evaluation;
- ``checkpoint.pt`` (latest; written when the run starts, so a run folder can always be resumed) and ``best.pt``
  (best validation top-1), written atomically, loadable with ``torch.load(weights_only=True)``: model, optimizer,
  schedule, epoch, step within the epoch, every rank's RNG states and the arguments (with the kernel providers and
  memory format actually used). ``--resume`` (a checkpoint, or a run folder for its checkpoint.pt) continues
  exactly where the run stopped: the data order and augmentation are functions of (seed, epoch, position), and
  dropout's seeds come from the restored torch generator.

A run is never lost. A new run refuses an ``--out`` that holds another run; evaluating (``--evaluate``) writes
nothing but ``evaluate.jsonl``; resuming from a checkpoint older than the run's ``checkpoint.pt`` is refused unless
it forks into a new ``--out``; a resume restores every setting that shapes the computation (a flag given again wins,
with a note); a log line torn by a crash is dropped with a warning.

Ctrl-C (SIGINT) or SIGTERM saves the current state and exits (status 130); a NaN or infinite loss (training or
validation) stops before anything is written and leaves the last checkpoint as it was (status 1); a bad
configuration (:class:`UsageError`) or bad data (:class:`DataError`) stops with a one-line message (status 2).
Under ``torchrun`` the model is wrapped in DistributedDataParallel (NCCL on GPUs, gloo on CPUs): ``--batch-size`` is
the global batch, split evenly across ranks; rank 0 alone prints and writes files; metrics are summed over ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import tritonnet
from tritonnet import functional as F
from tritonnet import launch, plot
from tritonnet.launch import EXIT_INTERRUPTED, EXIT_NAN, EXIT_OK, EXIT_USAGE
from tritonnet.cli import add_kernels_argument, describe_kernels, model_name
from tritonnet.data import DataError, build_data, find_idx_files
from tritonnet.models import MODELS, create_model, he_init, paper_init
from tritonnet.nn import Linear
from tritonnet.ops.cross_entropy import raise_deferred_target_errors

CHECKPOINT_FORMAT = 1
# The fewest images a rank evaluates at once (measured in the interpreter: 73 ms an image at 16, 54 at 64).
EVALUATION_BATCH = 64
INPUT_SIZES = {"alexnet": 227, "alexnet-torchvision": 224, "alexnet-small": 32}
INITIALISATIONS = {"model": lambda model: model, "paper": paper_init, "he": he_init}
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
# The files a training run owns in its folder: a new run refuses a folder holding any of them.
RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl", "train.jsonl", "curves.png")
LOGS = ("metrics.jsonl", "train.jsonl")


class UsageError(Exception):
    """A configuration the run cannot follow (a bad flag, a checkpoint that does not fit, an output folder that
    cannot be written): shown as one line, exit status 2. Bad data is a :class:`DataError`."""


def raise_bad_targets() -> None:
    """On a GPU, cross_entropy checks class indices on the device and leaves the verdict for a host sync; the loop's
    loss checks are those syncs. A bad label in the data is a :class:`DataError` (its loss was NaN, so this runs
    before the NaN check to give the real cause)."""
    try:
        raise_deferred_target_errors()
    except ValueError as error:
        raise DataError(f"the labels do not fit the model: {error}") from None


class NonFiniteLoss(Exception):
    """A NaN or infinite loss (or weights): the run stops before anything is written."""


@dataclass
class TrainConfig:
    """Everything a run depends on. ``None`` means "the preset's value" (see :func:`resolve`)."""

    data: str | None = None  # None: Fashion-MNIST; "synthetic"; a folder of IDX files; an ImageNet-style folder
    model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None  # global: split across ranks
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str | None = None  # "step", "plateau" or "cosine"
    lr_steps: list[float] | None = None  # epochs at which the step schedule divides the lr by 10
    patience: int = 3  # evaluations without a better top-1 before the plateau schedule divides the lr by 10
    warmup_epochs: float | None = None  # linear warm-up from 0 over this many epochs
    label_smoothing: float | None = None
    dropout: float | None = None
    dropout_start: float | None = None  # epoch from which dropout is on (off before)
    init: str | None = None  # "model" (the model's own), "paper" (N(0, 0.01), biases 1 or 0) or "he"
    augment: bool | None = None  # random crops/shifts, flips, lighting
    ten_crop: bool = False
    train_subset: int | None = None  # the first N training images
    val_subset: int | None = None  # the first N validation images
    max_steps: int | None = None  # stop after this many optimizer steps in total
    seed: int = 0
    amp: str | None = None  # "bf16" or "fp16" autocast on a GPU
    workers: int = 4
    ranks: int | None = None  # training processes; None: one per core on a CPU running Triton's interpreter, else 1
    kernels: dict[str, str] | str | None = None  # {op: provider}, or "op=provider,..." as on the command line
    memory_format: str | None = None  # "channels_last" (the default on a GPU) or "contiguous" (on a CPU)
    out: str | None = None
    resume: str | None = None
    evaluate: bool = False
    print_every: int | None = None  # steps between loss checks and progress updates


# The paper's recipe, used on a GPU (and for image folders on any device).
PAPER = dict(model="alexnet", epochs=90, batch_size=128, lr=0.01, schedule="step", lr_steps=[30.0, 60.0, 80.0],
             warmup_epochs=0.0, label_smoothing=0.0, dropout=0.5, dropout_start=0.0, init="model", augment=True)
# Fashion-MNIST on a GPU: the paper's recipe, shortened to 12 epochs of the 60,000 images (lr / 10 at 8 and 11), with
# He initialisation: from the paper's N(0, 0.01) the loss stays flat at chance for hundreds of steps on these
# normalised inputs (Caffe reports the same flat start); --init paper restores it.
GPU_FASHION_MNIST = dict(PAPER, epochs=12, lr_steps=[8.0, 11.0], init="he")
# The CPU demo, sized for Triton's interpreter on 2 cores: at most 4 minutes, planned at about 3.2 (INTERPRETER_COSTS),
# since the same machine runs 15-30% slower in a bad hour (4,096 images took 239 s in one, against 201 s expected).
# The measured costs per image and the recipe sweeps are in benchmarks/results/NOTES.md. What differs from the
# paper, and why:
# - alexnet-small (32x32 input, He initialisation), so an image costs milliseconds, not seconds;
# - one epoch of the first 3,072 training images, evaluated once, at the end: accuracy grows with the images seen
#   (over seeds 0-4 at lr 0.02: 73.4-75.4% at 3,072, 73.5-76.0% at 3,584, 74.9-76.5% at 4,096, which would take
#   4 minutes in a bad hour), and an evaluation of 1,000 images costs as much as 450 training images;
# - batch 32, lr 0.02 with a linear warm-up over the first 0.1 epoch and a cosine decay to 0, label smoothing 0.1:
#   the best of the settings tried at this size, with the paper's optimizer (batch 64 learns less per image; lr
#   0.03 and 0.04 leave some seeds below 72%);
# - no dropout and no augmentation: both slow learning this short, and the interpreter's random numbers are slow;
# - evaluation on the first 1,000 held-out test images.
CPU_DEMO = dict(model="alexnet-small", epochs=1, batch_size=32, lr=0.02, schedule="cosine", lr_steps=[],
                warmup_epochs=0.1, label_smoothing=0.1, dropout=0.0, dropout_start=0.0, init="model",
                augment=False, train_subset=3_072, val_subset=1_000)


@dataclass(frozen=True)
class InterpreterCosts:
    """What alexnet-small costs one rank process in Triton's interpreter, in seconds: a training step is a fixed part
    (per launch and per loop step) plus a part per image of the rank's share of the batch; evaluation a part per
    image; starting, the imports, the data and the ranks' gloo group. Measured on a 2-core machine on 1 December
    2026 (benchmarks/results/NOTES.md); a machine of the same kind varies by about 30% from hour to hour."""

    step: float = 0.7
    training_image: float = 0.062
    evaluated_image: float = 0.028
    start: float = 15.0

    def run_seconds(self, config: "TrainConfig", train_images: int, val_images: int, ranks: int) -> float:
        """The planned wall time of a run that evaluates once per epoch."""
        steps = config.epochs * -(-train_images // config.batch_size)
        share = config.batch_size / ranks
        return (self.start + steps * (self.step + share * self.training_image)
                + config.epochs * -(-val_images // ranks) * self.evaluated_image)


INTERPRETER_COSTS = InterpreterCosts()
# What depends on the device, not the recipe: a loss check is a host sync, which a GPU step should not wait on every
# step; conv's fast GPU tiles need channels contiguous, while the interpreter runs either layout.
GPU_DEFAULTS = dict(print_every=20, memory_format="channels_last")
CPU_DEFAULTS = dict(print_every=1, memory_format="contiguous")
# Where each preset applies, as --help says it: the paper's recipe is the plain default, the others are exceptions.
PRESET_PLACES = (("", PAPER), ("for Fashion-MNIST on a GPU", GPU_FASHION_MNIST), ("in the CPU demo", CPU_DEMO))
# What --resume takes from the checkpoint unless given again on the command line: every setting that shapes the
# computation. The checkpoint holds the kernel providers and memory format the run actually used.
RESTORED_ON_RESUME = ("data", "model", "epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "lr_steps",
                      "patience", "warmup_epochs", "label_smoothing", "dropout", "dropout_start", "init", "augment",
                      "ten_crop", "train_subset", "val_subset", "max_steps", "seed", "amp", "kernels",
                      "memory_format", "ranks")
# A resumed position counts steps of batch_size images out of train_subset: changing either would misplace it.
FIXED_ON_RESUME = ("batch_size", "train_subset")


def preset(config: TrainConfig, on_gpu: bool) -> tuple[str, dict]:
    """The name and values of the preset that fills ``config``'s unset fields."""
    small_images = config.data is None or config.data == "synthetic" and not on_gpu or (
        config.data != "synthetic" and find_idx_files(config.data) is not None)
    if not small_images:
        return "paper", PAPER
    if on_gpu:
        return "paper, shortened for Fashion-MNIST", GPU_FASHION_MNIST
    return "CPU demo", CPU_DEMO


def kernel_choices(kernels: dict[str, str] | str | None) -> dict[str, str]:
    """``--kernels`` as ``{op: provider}`` (a string is parsed as on the command line)."""
    if isinstance(kernels, str):
        try:
            return tritonnet.parse_kernels(kernels)
        except ValueError as error:
            raise UsageError(str(error)) from None
    return dict(kernels or {})


def resolve(config: TrainConfig, on_gpu: bool, checkpoint_args: dict | None = None,
            explicit: set[str] = frozenset(), note: Callable[[str], None] = lambda message: None,
            ) -> tuple[TrainConfig, str]:
    """Fill the unset fields: an explicit value wins (with a ``note`` where it differs from the checkpoint's), then
    the checkpoint's (when resuming), then the preset's."""
    values = dataclasses.asdict(config)
    values["kernels"] = kernel_choices(config.kernels)
    for name in RESTORED_ON_RESUME if checkpoint_args else ():
        if name not in checkpoint_args:
            continue
        saved = checkpoint_args[name]
        if name == "kernels":
            saved = kernel_choices(saved)  # the providers given again replace the checkpoint's for those ops only
            given = values["kernels"] if name in explicit else {}
            values["kernels"] = {**saved, **given}
            changed = {op: provider for op, provider in given.items() if saved.get(op, provider) != provider}
            if changed:
                note(f"--kernels {','.join(f'{op}={provider}' for op, provider in changed.items())} overrides the "
                     f"checkpoint's {','.join(f'{op}={saved[op]}' for op in changed)}")
        elif name not in explicit:
            values[name] = saved
        elif values[name] != saved:
            flag = "--" + name.replace("_", "-")
            if name in FIXED_ON_RESUME:
                raise UsageError(f"{flag} {values[name]} differs from the checkpoint's {saved}: its position counts "
                                 f"steps of {checkpoint_args['batch_size']} images out of the first "
                                 f"{checkpoint_args['train_subset'] or 'all'}; resume without {flag}, or start a "
                                 f"new run")
            note(f"{flag} {values[name]} overrides the checkpoint's {'default' if saved is None else saved}")
    resolved = TrainConfig(**values)
    if resolved.model is not None:
        resolved.model = model_name(resolved.model)
    name, defaults = preset(resolved, on_gpu)
    for key, value in defaults.items():
        if getattr(resolved, key) is None:
            setattr(resolved, key, list(value) if isinstance(value, list) else value)
    for key, value in (GPU_DEFAULTS if on_gpu else CPU_DEFAULTS).items():
        if getattr(resolved, key) is None:
            setattr(resolved, key, value)
    return resolved, name


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take: ``lowest`` (included unless ``above``) up to ``below`` (excluded)."""

    lowest: float
    below: float = math.inf
    above: bool = False

    def admits(self, value: float) -> bool:
        return (value > self.lowest if self.above else value >= self.lowest) and value < self.below

    def __str__(self) -> str:
        if self.below == math.inf:
            return f"{'greater than' if self.above else 'at least'} {self.lowest}"
        return f"in [{self.lowest}, {self.below})"


# The numeric settings check_config bounds (an unset one, None, is not checked).
NUMBER_BOUNDS = {"epochs": Bounds(1), "lr": Bounds(0, above=True), "momentum": Bounds(0, 1), "weight_decay": Bounds(0),
                 "patience": Bounds(1), "warmup_epochs": Bounds(0), "label_smoothing": Bounds(0, 1),
                 "dropout": Bounds(0, 1), "dropout_start": Bounds(0),
                 "train_subset": Bounds(1), "val_subset": Bounds(1), "max_steps": Bounds(1),
                 "seed": Bounds(0, 2**31), "workers": Bounds(0), "print_every": Bounds(1), "ranks": Bounds(1)}


def check_config(config: TrainConfig, world_size: int, on_gpu: bool) -> None:
    """Refuse impossible combinations with a one-line message."""
    if config.model not in MODELS:
        raise UsageError(f"unknown --model {config.model!r}; choose from {', '.join(MODELS)}")
    if config.init not in INITIALISATIONS:
        raise UsageError(f"unknown --init {config.init!r}; choose from {', '.join(INITIALISATIONS)}")
    if config.schedule not in ("step", "plateau", "cosine"):
        raise UsageError(f"unknown --schedule {config.schedule!r}; choose from step, plateau, cosine")
    if config.memory_format not in MEMORY_FORMATS:
        raise UsageError(f"unknown --memory-format {config.memory_format!r}; choose from {', '.join(MEMORY_FORMATS)}")
    if config.batch_size < 1 or config.batch_size % world_size:
        raise UsageError(f"--batch-size {config.batch_size} must be a positive multiple of the {world_size} ranks")
    for name, bounds in NUMBER_BOUNDS.items():
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and bounds.admits(value)):
            flag = "-j/--workers" if name == "workers" else "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be {bounds}, got {value}")
    if any(not math.isfinite(step) or step < 0 for step in config.lr_steps):
        raise UsageError(f"--lr-steps must be epochs (at least 0), got {config.lr_steps}")
    if config.amp is not None and (config.amp not in ("bf16", "fp16") or not on_gpu):
        raise UsageError(f"--amp {config.amp} needs a CUDA device (and one of bf16, fp16)")


class Schedule:
    """The learning rate as a function of training progress (in epochs), and the plateau schedule's state."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.decays = 0  # plateau: how many times the lr was divided by 10
        self.best = -math.inf
        self.bad_evaluations = 0

    def lr(self, progress: float) -> float:
        config = self.config
        warmup = min(1.0, progress / config.warmup_epochs) if config.warmup_epochs > 0 else 1.0
        if config.schedule == "cosine":
            return config.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * min(progress / config.epochs, 1.0)))
        if config.schedule == "step":
            return config.lr * warmup * 0.1 ** sum(progress >= milestone for milestone in config.lr_steps)
        return config.lr * warmup * 0.1 ** self.decays

    def observe(self, top1: float) -> None:
        """After an evaluation: the plateau schedule divides the lr by 10 after ``patience`` without a better top-1."""
        if top1 > self.best:
            self.best, self.bad_evaluations = top1, 0
            return
        self.bad_evaluations += 1
        if self.config.schedule == "plateau" and self.bad_evaluations >= self.config.patience:
            self.decays, self.bad_evaluations = self.decays + 1, 0

    def state_dict(self) -> dict:
        return {"decays": self.decays, "best": self.best, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.decays, self.best, self.bad_evaluations = state["decays"], state["best"], state["bad_evaluations"]


@dataclass
class Distributed:
    """This process's place in a torchrun job (world_size 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"local rank {local_rank} needs a CUDA device of its own, and this machine has "
                                   f"{torch.cuda.device_count()}: start at most that many processes per node")
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(rank, world_size, local_rank)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(values)
        return values

    def gather(self, value) -> list:
        if self.world_size == 1:
            return [value]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def rng_state(device: torch.device) -> dict:
    """Every generator this process draws from, as tensors and plain Python values (weights_only-loadable)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss}}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["position"],
                         saved["has_gauss"], saved["cached_gaussian"]))
    saved = state["python"]
    random.setstate((saved["version"], tuple(saved["internal"]), saved["gauss"]))


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it replaces the old file (a kill can leave it behind)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)``, then replace ``path`` with it, so that a crash leaves the old file or the new one,
    never a torn one. A failed write (disk full, read-only) removes the temporary file, leaves ``path`` as it was
    and raises a one-line :class:`UsageError`."""
    temporary = temporary_path(path)
    try:
        write(temporary)
        with open(temporary, "rb") as file:  # on disk before it replaces the old file (power loss)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as a RuntimeError
        temporary.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise UsageError(f"cannot write {path}: {reason}; {path.name} is as it was") from None


def save_atomic(state: dict, path: Path) -> None:
    write_atomic(path, lambda temporary: torch.save(state, temporary))


def copy_atomic(source: Path, destination: Path) -> None:
    write_atomic(destination, lambda temporary: shutil.copyfile(source, temporary))


def write_records_atomic(path: Path, records: list[dict]) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(records_text(records)))


def read_records(path: Path, warn: Callable[[str], None]) -> list[dict]:
    """The JSON records of a log, one a line. A torn last line (a crash or a full disk mid-write) is dropped with a
    warning; a bad line before it is a :class:`DataError`."""
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with a step")
        except ValueError as error:
            if any(rest.strip() for rest in lines[number:]):
                raise DataError(f"{path} line {number} is not a log record ({error}); remove or fix it") from None
            warn(f"dropped the torn last line of {path} (line {number}: {line[:40]!r}), written as the run stopped")
            continue
        records.append(record)
    return records


def checkpoint_path(path: str | Path) -> Path:
    """``--resume PATH``: a checkpoint file, or a run folder (its checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise UsageError(f"--resume {path} is a folder without a checkpoint.pt")
        return path / "checkpoint.pt"
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = checkpoint_path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: unpickling fails in many ways
        raise UsageError(f"cannot load checkpoint {path}: {type(error).__name__}: {error}".splitlines()[0]) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a tritonnet training checkpoint")
    return state


def records_text(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


@contextlib.contextmanager
def output_errors(path: Path):
    """An OSError writing ``path`` (read-only, disk full, a file where a folder should be) as a one-line
    :class:`UsageError`."""
    try:
        yield
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


def same_file(first: Path, second: Path) -> bool:
    return first.exists() and second.exists() and os.path.samefile(first, second)


def held_run_files(folder: Path) -> list[str]:
    return [name for name in RUN_FILES if (folder / name).exists()]


def output_folder(config: TrainConfig, resume: Path | None) -> Path:
    """Where the run writes: ``--out``, else the resumed checkpoint's folder, else ``runs/<model>-<time>``."""
    if config.out:
        return Path(config.out)
    if resume is not None:
        return resume.parent
    return Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_output_folder(out: Path, resume: Path | None, checkpoint: dict | None) -> None:
    """Refuse to train where it would destroy a run's files: into another run's folder, or in place from a
    checkpoint older than the folder's checkpoint.pt. Resuming into a new folder forks the run."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if resume is not None and out.resolve() == resume.parent.resolve():
        latest = out / "checkpoint.pt"
        if latest.is_file() and not same_file(latest, resume):
            latest_step = load_checkpoint(latest)["global_step"]
            if latest_step > checkpoint["global_step"]:
                raise UsageError(f"{resume} is at step {checkpoint['global_step']} but {latest} is at step "
                                 f"{latest_step}: resuming here would destroy the later steps; fork it with --out "
                                 f"NEW_FOLDER, or resume the latest with --resume {out}")
        return
    held = held_run_files(out)
    if held:
        raise UsageError(f"--out {out} already holds a run ({', '.join(held)}): continue it with --resume {out}, or "
                         f"choose a new --out")


def dropout_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, float]]:
    """(layer, attribute, p) for every dropout the model applies: fused into Linear layers, or standalone."""
    found = []
    for module in model.modules():
        if isinstance(module, Linear) and module.dropout > 0:
            found.append((module, "dropout", module.dropout))
        elif isinstance(module, torch.nn.Dropout) and module.p > 0:
            found.append((module, "p", module.p))
    return found


def accuracy_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many rows have their label as the top prediction, and among the top five."""
    hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
    return hits[:, 0].sum(), hits.any(dim=1).sum()


@dataclass
class Totals:
    """Sums over the training steps of the current epoch, over all ranks."""

    loss: float = 0.0
    correct: float = 0.0
    images: float = 0.0


@dataclass
class Position:
    """Where training stands: the next step to take is ``step`` of ``epoch``."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    totals: Totals = field(default_factory=Totals)
    seconds: float = 0.0  # training time spent in this epoch so far


class Run:
    """One training (or evaluation) run: data, model, optimizer, schedule, position and outputs."""

    def __init__(self, config: TrainConfig, preset_name: str, distributed: Distributed, device: torch.device,
                 console: Console, out: Path, resume: Path | None = None, checkpoint: dict | None = None):
        """``resume``: the checkpoint file ``checkpoint`` was loaded from. When training, ``out`` has passed
        :func:`check_output_folder`."""
        self.config, self.preset_name, self.distributed, self.device = config, preset_name, distributed, device
        self.console, self.out, self.resume = console, out, resume
        self.memory_format = MEMORY_FORMATS[config.memory_format]
        self.data = build_data(config.data, INPUT_SIZES[config.model], device, config.seed,
                               train_subset=config.train_subset, val_subset=config.val_subset,
                               workers=config.workers, ten_crop=config.ten_crop, augment=config.augment,
                               warn=self.warn)
        self.steps_per_epoch = self.data.steps_per_epoch(config.batch_size)
        if self.steps_per_epoch == 0:
            raise DataError(f"{self.data.train_size} training images make no full batch of {config.batch_size}")
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = INITIALISATIONS[config.init](create_model(config.model, self.data.num_classes,
                                                                dropout=config.dropout)).to(device)
        self.model.to(memory_format=self.memory_format)
        self.dropouts = dropout_layers(self.model)
        torch.manual_seed(config.seed * 7919 + 1 + distributed.rank)  # each rank's own dropout stream
        np.random.seed(config.seed + distributed.rank)
        random.seed(config.seed + distributed.rank)
        self.trained = self.model
        if distributed.world_size > 1:
            self.trained = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.schedule = Schedule(config)
        self.position = Position()
        self.history: list[dict] = []  # one record per evaluation (metrics.jsonl)
        self.trace: list[dict] = []  # one record per loss check while training (train.jsonl): the fine train curve
        self.best_top1 = -math.inf
        self.stop_signal: str | None = None
        if checkpoint is not None:
            self.restore(checkpoint)
        self.saved_step = self.position.global_step if checkpoint is not None else None  # what checkpoint.pt holds

    def open_output(self) -> None:
        """Before training: take the logs up to the resumed step (from the forked run's folder, or this one's, cut
        back where a run died after logging past its checkpoint), remove the temporary files a kill left, and make
        sure ``checkpoint.pt`` holds a state to resume from."""
        source = self.resume.parent if self.resume is not None else self.out
        in_place = self.resume is not None and source.resolve() == self.out.resolve()
        self.history, self.trace = (self.read_log(source / name) for name in LOGS)
        if self.distributed.main:
            with output_errors(self.out):
                self.out.mkdir(parents=True, exist_ok=True)
                for name in RUN_FILES:
                    temporary_path(self.out / name).unlink(missing_ok=True)
            for name, records in zip(LOGS, (self.history, self.trace)):
                path = self.out / name
                if records or path.is_file():
                    if not path.is_file() or path.read_text(errors="replace") != records_text(records):
                        write_records_atomic(path, records)
            best = source / "best.pt"
            if not in_place and best.is_file() and load_checkpoint(best)["global_step"] <= self.position.global_step:
                copy_atomic(best, self.out / "best.pt")  # the fork's best so far
        if not in_place:  # a new run or a fork: resumable from its first step
            self.save()

    # ----------------------------------------------------------------------------------------------- outputs
    def warn(self, message: str) -> None:
        if self.distributed.main:
            self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def print(self, *args, **kwargs) -> None:
        if self.distributed.main:
            self.console.print(*args, highlight=False, **kwargs)

    def log(self, record: dict, file_name: str = "metrics.jsonl") -> None:
        if self.distributed.main:
            with output_errors(self.out / file_name):
                self.out.mkdir(parents=True, exist_ok=True)
                with open(self.out / file_name, "a") as file:
                    file.write(records_text([record]))

    def draw_curves(self) -> None:
        if not self.distributed.main or not self.history:
            return

        def series(records: list[dict], key: str):
            return [record["epoch"] for record in records], [record[key] for record in records]

        # Training curves from every loss check (train.jsonl), validation from every evaluation (metrics.jsonl).
        train = self.trace or self.history
        write_atomic(self.out / "curves.png", lambda temporary: plot.save(temporary, [
            plot.LineChart({"train loss": series(train, "train_loss"), "val loss": series(self.history, "val_loss")},
                           title="loss", xlabel="epoch", ylabel="cross-entropy"),
            plot.LineChart({"train top-1": series(train, "train_top1"), "val top-1": series(self.history, "val_top1"),
                            "val top-5": series(self.history, "val_top5")}, title="accuracy", xlabel="epoch",
                           ylabel="percent"),
        ]))

    # ------------------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        position = self.position
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "schedule": self.schedule.state_dict(),
            "epoch": position.epoch,
            "step_in_epoch": position.step,
            "global_step": position.global_step,
            "epoch_totals": dataclasses.asdict(position.totals),
            "epoch_seconds": position.seconds,
            "best_top1": self.best_top1,
            "rng": self.distributed.gather(rng_state(self.device)),
            "world_size": self.distributed.world_size,
            # The providers in use, whichever way they were chosen (--kernels, TRITONNET_KERNELS, the defaults).
            "args": {**dataclasses.asdict(self.config), "preset": self.preset_name,
                     "kernels": {op: tritonnet.provider_for(op) for op in tritonnet.available_kernels()}},
        }

    def save(self, improved: bool = False) -> None:
        """checkpoint.pt (and best.pt when ``improved``), never with non-finite weights. best.pt goes first: a kill
        between the two leaves checkpoint.pt older, and the resumed run evaluates and writes best.pt again."""
        if not all(torch.isfinite(parameter).all() for parameter in self.model.parameters()):
            raise NonFiniteLoss("the weights are no longer finite")
        state = self.state()  # on every rank: the RNG states are gathered
        if self.distributed.main:
            latest = self.out / "checkpoint.pt"
            if improved:
                save_atomic(state, self.out / "best.pt")
                copy_atomic(self.out / "best.pt", latest)
            else:
                save_atomic(state, latest)
        self.saved_step = self.position.global_step

    def restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            saved = state.get("args", {})
            raise UsageError(f"cannot resume {self.resume}: it holds a {saved.get('model')} trained on "
                             f"{saved.get('data') or 'Fashion-MNIST'}, which does not fit the {self.config.model} "
                             f"for {self.data.num_classes} classes built here ({str(error).splitlines()[0][:120]})"
                             ) from None
        if state["scaler"] is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        self.position = Position(state["epoch"], state["step_in_epoch"], state["global_step"],
                                 Totals(**state["epoch_totals"]), state["epoch_seconds"])
        self.best_top1 = state["best_top1"]
        if len(state["rng"]) == self.distributed.world_size:
            set_rng_state(state["rng"][self.distributed.rank], self.device)

    def read_log(self, path: Path) -> list[dict]:
        """A log's records up to the restored step: later ones were written after the checkpoint by a run that
        then died (:meth:`open_output` writes the log back without them)."""
        return [record for record in read_records(path, self.warn) if record["step"] <= self.position.global_step]

    # ------------------------------------------------------------------------------------------- evaluation
    def autocast(self):
        if self.config.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.config.amp == "bf16" else torch.float16)

    def evaluate(self) -> dict:
        """Loss, top-1 and top-5 (percent) over the whole validation set, summed over ranks. It draws nothing from
        the training's random generators, so evaluating more or less often does not change training."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), torch.no_grad():
            self.model.eval()
            try:
                return self._evaluate()
            finally:
                self.model.train()

    def _evaluate(self) -> dict:
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, top-1 hits, top-5 hits, images
        # At least EVALUATION_BATCH images a batch: the interpreter's fixed cost per launch is spread over more.
        local_batch = max(self.config.batch_size // self.distributed.world_size, EVALUATION_BATCH)
        for images, labels in self.data.val_batches(local_batch, self.distributed.rank, self.distributed.world_size):
            if len(labels) == 0:
                continue
            with self.autocast():
                if images.dim() == 5:  # ten crops: average the softmax over the crops
                    logits = self.model(self.laid_out(images.flatten(0, 1))).float()
                    probabilities = logits.softmax(dim=1).view(len(labels), images.shape[1], -1).mean(dim=1)
                    logits = probabilities.clamp_min(1e-12).log()
                    loss = torch.nn.functional.nll_loss(logits, labels, reduction="sum")
                else:
                    logits = self.model(self.laid_out(images)).float()
                    loss = F.cross_entropy(logits, labels, reduction="sum")
            top1, top5 = accuracy_counts(logits, labels)
            sums += torch.stack([loss.double(), top1.double(), top5.double(), self.count(labels)])
        loss, top1, top5, images = self.distributed.sum(sums).tolist()
        if images == 0:
            raise DataError(f"none of the {self.data.val_size:,} validation images could be used "
                            f"({self.data.corrupt_images():,} corrupt images skipped so far)")
        return {"val_loss": loss / images, "val_top1": 100.0 * top1 / images, "val_top5": 100.0 * top5 / images,
                "val_images": int(images)}

    def evaluate_and_log(self, lr: float) -> dict:
        """Evaluate, log one metrics record, feed the plateau schedule. A non-finite validation loss stops the run
        before anything is written."""
        position, totals = self.position, self.position.totals
        if totals.images == 0:
            raise DataError(f"none of the {self.data.train_size:,} training images could be used in epoch "
                            f"{position.epoch + 1} ({self.data.corrupt_images():,} corrupt images skipped)")
        record = {"epoch": round(position.global_step / self.steps_per_epoch, 4), "step": position.global_step,
                  "train_loss": totals.loss / totals.images, "train_top1": 100 * totals.correct / totals.images}
        record.update(self.evaluate())
        raise_bad_targets()
        if not math.isfinite(record["val_loss"]):
            raise NonFiniteLoss(f"the validation loss became {record['val_loss']} at step {position.global_step}")
        record.update({"images_per_sec": totals.images / max(position.seconds, 1e-9), "lr": lr,
                       "corrupt_images": self.data.corrupt_images(), "time": time.time()})
        self.schedule.observe(record["val_top1"])
        self.history.append(record)
        self.log(record)
        self.print(f"epoch {record['epoch']:g}: train loss {record['train_loss']:.4f}, val loss "
                   f"{record['val_loss']:.4f}, val top-1 {record['val_top1']:.2f}%, top-5 {record['val_top5']:.2f}% "
                   f"({record['val_images']:,} images), {record['images_per_sec']:.0f} img/s")
        return record

    def save_after(self, record: dict) -> None:
        """The checkpoint after an evaluation (best.pt too when its top-1 is the best so far), then the curves."""
        improved = record["val_top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, record["val_top1"])
        self.save(improved=improved)
        self.draw_curves()

    # --------------------------------------------------------------------------------------------- training
    def laid_out(self, images: torch.Tensor) -> torch.Tensor:
        """A batch (N, C, H, W) in the model's memory format (--memory-format)."""
        return images.contiguous(memory_format=self.memory_format)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step; returns (loss sum, top-1 hits, images) over the local batch, on the device."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast():
            logits = self.trained(self.laid_out(images))
            if len(labels):
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
            else:  # every image of this rank's part was corrupt: join the gradient all-reduce with zeros
                loss = logits.sum() * 0.0
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return torch.stack([loss.detach().double() * len(labels), correct.double(), self.count(labels)])

    def count(self, labels: torch.Tensor) -> torch.Tensor:
        """len(labels) as a float64 on the device, filled there (a copy from the host would wait for the GPU)."""
        return torch.full((), float(len(labels)), dtype=torch.float64, device=self.device)

    def train(self) -> int:
        """Train to the end (``epochs``, or ``max_steps`` steps in all); returns the exit status."""
        config, position = self.config, self.position
        total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("left"),
                            TimeRemainingColumn(), console=self.console, disable=not self.distributed.main)
        previous_handlers = self.install_signal_handlers()
        try:
            self.open_output()
            with progress:
                task = progress.add_task("train", total=total_steps, completed=position.global_step,
                                         epoch=f"{position.epoch + 1}/{config.epochs}", stats="")
                while position.global_step < total_steps and not self.stop_requested():
                    self.train_epoch(progress, task, total_steps)
            if not self.stop_requested() and position.step > 0:  # cut short by --max-steps inside an epoch
                self.save_after(self.evaluate_and_log(self.last_lr()))
            if self.stop_requested():
                self.save()
        except NonFiniteLoss as error:
            return self.stop_on_nan(str(error))
        finally:
            self.restore_signal_handlers(previous_handlers)
        if self.stop_requested():
            self.print(f"[bold]Stopped by {self.stop_signal}[/] at epoch {position.epoch + 1}, step {position.step} "
                       f"({position.global_step} steps in all). Saved {self.out / 'checkpoint.pt'}; continue with "
                       f"--resume {self.out / 'checkpoint.pt'}")
            return EXIT_INTERRUPTED
        self.summary()
        return EXIT_OK

    def last_lr(self) -> float:
        """The learning rate of the last step trained (what an evaluation's record reports)."""
        position = self.position
        return self.schedule.lr(position.epoch + (max(position.step, 1) - 1) / self.steps_per_epoch)

    def train_epoch(self, progress: Progress, task, total_steps: int) -> None:
        """Train until the end of the epoch, ``total_steps``, or a signal; evaluate and save at the epoch's end."""
        config, position, distributed = self.config, self.position, self.distributed
        pending = torch.zeros(3, dtype=torch.float64, device=self.device)  # sums since the last check
        steps_pending, lr = 0, config.lr
        started = time.perf_counter() - position.seconds
        batches = self.data.train_batches(position.epoch, position.step, config.batch_size, distributed.rank,
                                          distributed.world_size)
        for images, labels in batches:
            progress_in_epochs = position.epoch + position.step / self.steps_per_epoch
            for module, attribute, p in self.dropouts:
                setattr(module, attribute, p if progress_in_epochs >= config.dropout_start else 0.0)
            lr = self.schedule.lr(progress_in_epochs)
            pending += self.train_step(images, labels, lr)
            steps_pending += 1
            position.step += 1
            position.global_step += 1
            last = position.step == self.steps_per_epoch or position.global_step >= total_steps
            if steps_pending < config.print_every and not last:
                continue
            loss_sum, correct, images_seen, stop = self.check_losses(pending, lr)
            totals = position.totals
            totals.loss, totals.correct, totals.images = (totals.loss + loss_sum, totals.correct + correct,
                                                          totals.images + images_seen)
            position.seconds = time.perf_counter() - started
            pending.zero_()
            steps_pending = 0
            if stop and self.stop_signal is None:
                self.stop_signal = "a signal to another rank"
            check = {"epoch": round(position.global_step / self.steps_per_epoch, 4), "step": position.global_step,
                     "train_loss": loss_sum / max(images_seen, 1), "train_top1": 100 * correct / max(images_seen, 1),
                     "images_per_sec": totals.images / max(position.seconds, 1e-9), "lr": lr}
            self.trace.append(check)
            self.log(check, "train.jsonl")
            progress.update(task, completed=position.global_step, epoch=f"{position.epoch + 1}/{config.epochs}",
                            stats=f"loss {loss_sum / max(images_seen, 1):.3f}  "
                                  f"top-1 {100 * totals.correct / max(totals.images, 1):.1f}%  "
                                  f"{totals.images / max(position.seconds, 1e-9):.0f} img/s  lr {lr:.3g}")
            if self.stop_signal is not None or last:
                break
        if position.step == self.steps_per_epoch:
            record = self.evaluate_and_log(self.last_lr())
            position.epoch, position.step, position.totals, position.seconds = position.epoch + 1, 0, Totals(), 0.0
            self.save_after(record)

    def check_losses(self, pending: torch.Tensor, lr: float) -> tuple[float, float, float, float]:
        """The one place where training losses are checked, before the weights of the steps since the last check
        are ever saved: sums ``pending`` (loss sum, top-1 hits, images) and the stop flag over the ranks (the only
        host sync of the loop) and raises :class:`NonFiniteLoss` for a NaN or infinite loss. Returns (loss sum,
        hits, images, ranks signalled)."""
        flag = torch.full((1,), 1.0 if self.stop_signal else 0.0, dtype=torch.float64, device=self.device)
        loss_sum, correct, images_seen, stop = self.distributed.sum(torch.cat([pending, flag])).tolist()
        raise_bad_targets()
        if not math.isfinite(loss_sum):
            position = self.position
            raise NonFiniteLoss(f"the training loss became {loss_sum} in epoch {position.epoch + 1} by step "
                                f"{position.step} (lr {lr:.4g})")
        return loss_sum, correct, images_seen, stop

    def stop_requested(self) -> bool:
        """Whether any rank was signalled (all ranks agree, so they stop at the same step)."""
        if self.distributed.world_size > 1:
            flag = torch.full((1,), 1.0 if self.stop_signal else 0.0, dtype=torch.float64, device=self.device)
            if self.distributed.sum(flag).item() and self.stop_signal is None:
                self.stop_signal = "a signal to another rank"
        return self.stop_signal is not None

    def stop_on_nan(self, reason: str) -> int:
        checkpoint = self.out / "checkpoint.pt"
        kept = (f"the last checkpoint, {checkpoint} (step {self.saved_step}), is unchanged"
                if self.saved_step is not None and checkpoint.is_file() else "no checkpoint had been written yet")
        self.print(f"[bold red]error:[/] {reason}; stopping before anything is written. {kept}. Try a lower --lr or "
                   f"a longer --warmup-epochs.")
        return EXIT_NAN

    def summary(self) -> None:
        if not self.distributed.main or not self.history:
            return
        table = Table(title=f"{self.config.model} on {self.data.name}")
        for column in ("epoch", "step", "train loss", "val loss", "val top-1 %", "val top-5 %", "images/s", "lr"):
            table.add_column(column, justify="right")
        for record in self.history:
            table.add_row(f"{record['epoch']:g}", str(record["step"]), f"{record['train_loss']:.4f}",
                          f"{record['val_loss']:.4f}", f"{record['val_top1']:.2f}", f"{record['val_top5']:.2f}",
                          f"{record['images_per_sec']:.0f}", f"{record['lr']:.3g}")
        self.console.print(table)
        best = max(self.history, key=lambda record: record["val_top1"])
        self.print(f"best val top-1 {best['val_top1']:.2f}% at epoch {best['epoch']:g}. In {self.out}/: "
                   f"metrics.jsonl, train.jsonl, curves.png, checkpoint.pt, best.pt")

    # ------------------------------------------------------------------------------------------------ signals
    def install_signal_handlers(self) -> dict:
        main_process = os.getpid()

        def handler(number, frame):
            if os.getpid() != main_process:  # a DataLoader worker (forked with this handler): the main process decides
                return
            if self.stop_signal is not None:  # a second Ctrl-C: stop at once
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(number).name
            if self.distributed.main:
                self.console.print(f"{self.stop_signal}: saving a checkpoint after this step (again to abort)")

        previous = {}
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[number] = signal.signal(number, handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return previous

    @staticmethod
    def restore_signal_handlers(previous: dict) -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)


def interpreter_runs_triton_kernels() -> bool:
    """Whether Triton's interpreter runs any of the kernels chosen now (no GPU, some op on the triton provider)."""
    return tritonnet.INTERPRET and "triton" in (tritonnet.provider_for(op) for op in tritonnet.available_kernels())


def describe(run: Run) -> None:
    """The first lines: where the kernels run, which kernels, the data, the model and the recipe."""
    config, device = run.config, run.device
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    if device.type == "cuda":
        run.print(f"tritonnet: training on {torch.cuda.get_device_name(device)} x {run.distributed.world_size}")
    elif interpreter_runs_triton_kernels():
        ranks = run.distributed.world_size
        minutes = INTERPRETER_COSTS.run_seconds(config, run.data.train_size, run.data.val_size, ranks) / 60
        demo = (f" This is the CPU demo: {config.model} trained for {epochs} on {run.data.train_size:,} images and "
                f"tested on {run.data.val_size:,}, about {minutes:.0f} minutes on {ranks} "
                f"core{'s' if ranks != 1 else ''} (the progress bar shows the time left)."
                if run.preset_name == "CPU demo" else "")
        run.print("[bold]tritonnet: no CUDA device, so the Triton kernels run in Triton's interpreter on the CPU "
                  f"(TRITON_INTERPRET=1).[/]{demo} Add --kernels all=torch to use PyTorch's reference kernels "
                  "instead (much faster).")
    else:
        run.print("tritonnet: no CUDA device; training on the CPU")
    run.print(f"kernels: {describe_kernels()}")
    run.print(f"data: {run.data.description}")
    parameters = sum(parameter.numel() for parameter in run.model.parameters())
    size = INPUT_SIZES[config.model]
    init = {"model": "its own initialisation", "paper": "the paper's initialisation", "he": "He initialisation"}
    run.print(f"model: {config.model} ({parameters:,} parameters, {size}x{size} input, {init[config.init]}, "
              f"{config.memory_format} memory format)")
    schedule = {"step": f"divided by 10 at epochs {', '.join(f'{step:g}' for step in config.lr_steps) or '(none)'}",
                "plateau": f"divided by 10 after {config.patience} evaluations without a better top-1",
                "cosine": "cosine decay to 0"}[config.schedule]
    warmup = f", linear warm-up over {config.warmup_epochs:g} epochs" if config.warmup_epochs else ""
    dropout_start = f" from epoch {config.dropout_start:g}" if config.dropout and config.dropout_start else ""
    run.print(f"recipe ({run.preset_name}): {epochs} of {run.steps_per_epoch} steps, batch "
              f"{config.batch_size}, SGD lr {config.lr:g} ({schedule}{warmup}), momentum {config.momentum:g}, "
              f"weight decay {config.weight_decay:g}, dropout {config.dropout:g}{dropout_start}, label smoothing "
              f"{config.label_smoothing:g}, augmentation {'on' if config.augment else 'off'}"
              + (f", {config.amp} autocast" if config.amp else ""))
    run.print(f"outputs: {run.out}/")


def train(config: TrainConfig, explicit: set[str] = frozenset(), console: Console | None = None) -> int:
    """Train (or with ``config.evaluate``, evaluate) and return the exit status. ``explicit`` names the fields the
    user set, which win over a resumed checkpoint's arguments."""
    # Messages are never wrapped (a path stays whole); tables and progress bars get 120 columns in a log file.
    console = console or Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    try:
        distributed = Distributed.from_environment()
    except (RuntimeError, ValueError, KeyError) as error:
        console.print(f"error: cannot join the torchrun job: {error}", highlight=False)
        return EXIT_USAGE
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", distributed.local_rank) if on_gpu else torch.device("cpu")
    notes: list[str] = []  # printed once the run is accepted, so that an error is the only line
    try:
        resume = checkpoint_path(config.resume) if config.resume else None
        checkpoint = load_checkpoint(resume) if resume else None
        config, preset_name = resolve(config, on_gpu, checkpoint["args"] if checkpoint else None, explicit,
                                      notes.append)
        check_config(config, distributed.world_size, on_gpu)
        if config.ranks not in (None, distributed.world_size):
            if "ranks" in explicit:
                raise UsageError(f"--ranks {config.ranks} differs from this job's {distributed.world_size} "
                                 f"processes (WORLD_SIZE)")
            notes.append(f"the checkpoint was saved by {config.ranks} ranks and this run has "
                         f"{distributed.world_size}: each rank's dropout stream starts afresh, so the run does not "
                         f"continue exactly")
        config.ranks = distributed.world_size
        out = output_folder(config, resume)
        if not config.evaluate:
            check_output_folder(out, resume, checkpoint)
        with contextlib.ExitStack() as kernels:
            try:  # a checkpoint may name a provider this installation lacks
                kernels.enter_context(tritonnet.use_kernels(**config.kernels))
            except ValueError as error:
                raise UsageError(str(error)) from None
            run = Run(config, preset_name, distributed, device, console, out, resume, checkpoint)
            for message in notes:
                run.print(f"note: {message}")
            describe(run)
            if not config.evaluate:
                return run.train()
            # Evaluating writes into no training run's files: one record appended to evaluate.jsonl.
            record = {"epoch": round(run.position.global_step / run.steps_per_epoch, 4),
                      "step": run.position.global_step, "checkpoint": str(resume) if resume else None,
                      **run.evaluate(), "time": time.time()}
            run.log(record, "evaluate.jsonl")
            run.print(f"evaluated {resume or 'the untrained model'}: val loss {record['val_loss']:.4f}, top-1 "
                      f"{record['val_top1']:.2f}%, top-5 {record['val_top5']:.2f}% over {record['val_images']:,} "
                      f"images (logged to {run.out / 'evaluate.jsonl'})")
            return EXIT_OK
    except (UsageError, DataError) as error:
        console.print(f"error: {error}", highlight=False)
        return EXIT_USAGE
    finally:
        if distributed.world_size > 1 and dist.is_initialized():
            if sys.exc_info()[0] is None:
                # Leave together: a rank that tears gloo down while its peer is still finishing (rank 0 writes the
                # checkpoint) can abort the peer ("terminate called without an active exception").
                dist.barrier()
            dist.destroy_process_group()


def shown(value) -> str:
    """A default as --help writes it."""
    if value is None:
        return "all"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(f"{item:g}" for item in value) or "none"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def preset_default(name: str) -> str:
    """``default: ...`` for a field the presets fill: the paper's value, then each preset that differs from it
    (``default: 90; 12 for Fashion-MNIST on a GPU; 1 in the CPU demo``)."""
    places: dict[str, list[str]] = {}
    for place, values in PRESET_PLACES:
        places.setdefault(shown(values.get(name)), []).append(place)
    parts = [value if "" in where else f"{value} {' and '.join(where)}" for value, where in places.items()]
    return "default: " + "; ".join(parts)


def device_default(name: str) -> str:
    """``default: ...`` for a field that depends on the device."""
    gpu, cpu = shown(GPU_DEFAULTS[name]), shown(CPU_DEFAULTS[name])
    return f"default: {gpu}" if gpu == cpu else f"default: {gpu} on a GPU; {cpu} on a CPU"


def field_default(name: str) -> str:
    """``default: ...`` for a field with one default, :class:`TrainConfig`'s."""
    return f"default: {shown(getattr(TrainConfig(), name))}"


def build_parser() -> argparse.ArgumentParser:
    fields = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="train_alexnet.py",
        description="Train AlexNet with tritonnet's Triton kernels. With no arguments: Fashion-MNIST (the full set "
                    "when installed, else the slice shipped in tritonnet/data). The defaults are the paper's recipe, "
                    "shortened for Fashion-MNIST on a GPU; without a GPU, Fashion-MNIST, IDX folders and synthetic "
                    "data get the CPU demo, a few minutes of the small model.")
    add = parser.add_argument
    add("--data", metavar="DIR", help="ImageNet-style folder (DIR/train/<class>/*, DIR/val/<class>/*), a folder of "
        "IDX files, or 'synthetic' (default: Fashion-MNIST)")
    add("--model", type=model_name, choices=sorted(MODELS),
        help=f"the network; the Python names (alexnet_small) work too ({preset_default('model')})")
    add("--epochs", type=int, help=f"passes over the training images ({preset_default('epochs')})")
    add("-b", "--batch-size", type=int, help=f"global batch, split across ranks ({preset_default('batch_size')})")
    add("--lr", type=float, help=f"initial (peak) learning rate ({preset_default('lr')})")
    add("--momentum", type=float, default=fields.momentum, help=f"SGD momentum ({field_default('momentum')})")
    add("--weight-decay", "--wd", type=float, default=fields.weight_decay, help="SGD weight decay "
        f"({field_default('weight_decay')})")
    add("--schedule", choices=["step", "plateau", "cosine"], help=f"lr schedule ({preset_default('schedule')})")
    add("--lr-steps", type=lambda text: [float(item) for item in text.split(",") if item], metavar="E1,E2,...",
        help=f"epochs at which the step schedule divides the lr by 10 ({preset_default('lr_steps')})")
    add("--patience", type=int, default=fields.patience, help="plateau schedule: evaluations without a better top-1 "
        f"before the lr is divided by 10 ({field_default('patience')})")
    add("--warmup-epochs", type=float, help=f"linear lr warm-up ({preset_default('warmup_epochs')})")
    add("--label-smoothing", type=float, help=f"label smoothing of the training loss "
        f"({preset_default('label_smoothing')})")
    add("--dropout", type=float, help=f"dropout in fc6 and fc7 ({preset_default('dropout')})")
    add("--dropout-start", type=float, metavar="EPOCH",
        help=f"dropout is off before this epoch ({preset_default('dropout_start')})")
    add("--init", choices=sorted(INITIALISATIONS), help="weights: the model's own (the paper's for alexnet, He for "
        f"alexnet-small), the paper's N(0, 0.01), or He ({preset_default('init')})")
    add("--augment", action=argparse.BooleanOptionalAction, help="random crops (shifts), flips and PCA lighting "
        f"when training ({preset_default('augment')})")
    add("--ten-crop", action="store_true", help="evaluate image folders on 10 crops, averaging the softmax")
    add("--train-subset", type=int, metavar="N", help=f"train on the first N images ({preset_default('train_subset')})")
    add("--val-subset", type=int, metavar="N", help=f"evaluate on the first N images ({preset_default('val_subset')})")
    add("--max-steps", type=int, metavar="N", help="stop after N optimizer steps in all (then evaluate and save)")
    add("--seed", type=int, default=fields.seed, help="seeds the weights, the data order, augmentation and "
        f"dropout ({field_default('seed')})")
    add("--amp", nargs="?", const="bf16", choices=["bf16", "fp16"], help="mixed precision on a GPU (bf16 when no "
        "value is given)")
    add("-j", "--workers", type=int, default=fields.workers,
        help=f"DataLoader workers decoding image folders ({field_default('workers')})")
    add("--ranks", type=int, metavar="N", help="training processes: data-parallel ranks over gloo, the global batch "
        "split across them (default: one per core while Triton's interpreter runs the kernels, else 1; a resumed "
        "run's own)")
    add("--single-process", dest="ranks", action="store_const", const=1, help="train in this process alone (--ranks "
        "1), for debugging")
    add_kernels_argument(parser)
    add("--memory-format", choices=sorted(MEMORY_FORMATS), help="layout of the model's weights and input batches "
        f"({device_default('memory_format')})")
    add("--out", metavar="DIR", help="output folder, refused when it holds another run; a new one forks the resumed "
        "run (default: runs/<model>-<time>, or the resumed checkpoint's)")
    add("--resume", metavar="PATH", help="continue from this checkpoint, or a run folder's checkpoint.pt (with "
        "--evaluate: evaluate it); a checkpoint older than its folder's checkpoint.pt needs a new --out")
    add("--evaluate", action="store_true", help="evaluate on the validation set only, and log it")
    add("--print-every", type=int, metavar="STEPS", help="steps between loss checks and progress updates "
        f"({device_default('print_every')})")
    return parser


def config_from_arguments(argv: list[str] | None = None) -> tuple[TrainConfig, set[str]]:
    """The config for a command line, and the names of the fields given on it (they win over a resumed
    checkpoint's)."""
    arguments = build_parser().parse_args(argv)
    given_only = build_parser()
    for action in given_only._actions:
        action.default = _NOT_GIVEN
    explicit = {name for name, value in vars(given_only.parse_args(argv)).items() if value is not _NOT_GIVEN}
    return TrainConfig(**vars(arguments)), explicit


class _NotGiven:
    """The default of every flag when telling which were given: falsy, so actions that merge into it still work."""

    def __bool__(self) -> bool:
        return False


_NOT_GIVEN = _NotGiven()


def ranks_to_start(config: TrainConfig, explicit: set[str]) -> tuple[int, str | None]:
    """How many rank processes the command line starts, and the ``--out`` they share (a new run's default folder,
    named once here so every rank agrees on it). 1 inside a torchrun job or one of our ranks."""
    if "WORLD_SIZE" in os.environ:
        return 1, None
    on_gpu = torch.cuda.is_available()
    checkpoint = load_checkpoint(config.resume) if config.resume else None
    resolved, _ = resolve(config, on_gpu, checkpoint["args"] if checkpoint else None, explicit)
    ranks = resolved.ranks
    if ranks is None:
        with tritonnet.use_kernels(**resolved.kernels):
            interpreted = interpreter_runs_triton_kernels()
        ranks = launch.default_ranks(resolved.batch_size or 1, launch.usable_cores()) if interpreted else 1
    if ranks > 1:  # refused here once, rather than by every rank at once
        check_config(resolved, ranks, on_gpu)
    out = None if config.out or config.resume else str(output_folder(resolved, None))
    return ranks, out


def main(argv: list[str] | None = None) -> int:
    """The command line: one process, or (see :mod:`tritonnet.launch`) one rank process per core."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config, explicit = config_from_arguments(argv)
    try:
        ranks, out = ranks_to_start(config, explicit)
    except (UsageError, DataError, ValueError) as error:
        print(f"error: {error}")
        return EXIT_USAGE
    if ranks > 1:
        return launch.run_ranks([*argv, "--ranks", str(ranks), *(["--out", out] if out else [])], ranks,
                                lambda message: print(f"error: {message}", flush=True))
    return train(config, explicit)


if __name__ == "__main__":
    sys.exit(main())
