"""A training step's Triton launches, recorded on a CPU as a GPU would make them, and compiled for GPUs.

``tritonnet.kernels.launches`` records whatever a callable launches, and ``tritonnet.kernels.gpu_compile`` compiles
recorded launches; neither knows a model. This module builds the callable: a tritonnet model on meta tensors, its loss
and backward. The roofline plan (plan.py), the GPU check's compile budget (budget.py), the compile report
(compile_report.py) and the compile check (tests/test_gpu_compile.py) start here:

    record_steps([Step("alexnet", 128, "bf16")])        # {step: [Launch]}, from any process
    compile_steps_in_subprocess(STEPS, (80, 90))         # report rows of tritonnet.kernels.gpu_compile.compile_recorded

Recording needs the launch functions' GPU paths, so both run in a ``TRITON_INTERPRET=0`` subprocess
(``python -m benchmarks.step_launches``), which works from the interpreter-mode test suite too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from tritonnet.kernels.gpu_compile import ARCHS, compile_recorded
from tritonnet.kernels.launches import Launch, LaunchRecorder, gpu_mode_environment
from tritonnet.timing import DTYPES


@dataclasses.dataclass(frozen=True)
class Step:
    """One training step to record: forward, cross-entropy loss, backward (no optimizer: SGD runs in torch)."""

    model: str  # a tritonnet.models name: "alexnet", "alexnet-small", ...
    batch: int
    dtype: str  # a tritonnet.timing.DTYPES name: "fp32", "bf16", "fp16"
    channels_last: bool = False
    architecture: int = 90
    tf32: bool = False  # fp32 GEMMs on TF32 tensor cores (torch.set_float32_matmul_precision("high"))

    @property
    def name(self) -> str:
        """The step without its architecture: ``alexnet batch 128 bf16 channels-last``."""
        layout = "channels-last" if self.channels_last else "contiguous"
        precision = " tf32" if self.tf32 and self.dtype == "fp32" else ""
        return f"{self.model} batch {self.batch} {self.dtype}{precision} {layout}"

    @property
    def label(self) -> str:
        return f"{self.name} sm_{self.architecture}"


# The training steps the compile check records (layouts: the models' own, and channels-last inputs and weights).
STEPS = (
    Step("alexnet", 128, "bf16", channels_last=True),
    Step("alexnet", 128, "fp32", channels_last=True, tf32=True),
    Step("alexnet-small", 32, "fp32"),
)


def training_loss(logits, labels):
    """The model's training loss, as tritonnet.functional.cross_entropy computes it with the Triton kernels. Its
    argument checks read the targets on the host, which meta tensors cannot: the recording calls the provider the
    checks dispatch to (the same kernels, with no class weights, torch's default ignore_index, mean reduction, no
    smoothing)."""
    from tritonnet.registry import lookup

    return lookup("cross_entropy", "triton")(logits, labels, None, -100, "mean", 0.0)


def record_training_step(step: Step) -> list[Launch]:
    """Record one training step of ``step.model`` on meta tensors (call in a ``TRITON_INTERPRET=0`` process)."""
    import torch

    from tritonnet.models import MODELS, create_model

    if step.model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {step.model!r}")
    if step.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {step.dtype!r}")
    dtype = DTYPES[step.dtype]
    memory_format = torch.channels_last if step.channels_last else torch.contiguous_format
    num_classes = 1000 if step.model != "alexnet-small" else 10
    with torch.device("meta"):
        model = create_model(step.model, num_classes).to(dtype=dtype, memory_format=memory_format)
        side = model.input_size
        images = torch.empty(step.batch, 3, side, side, dtype=dtype).contiguous(memory_format=memory_format)
        labels = torch.empty(step.batch, dtype=torch.int64)
    model.train()
    precision = torch.get_float32_matmul_precision()
    torch.manual_seed(0)  # the same dropout seeds in every recording
    torch.set_float32_matmul_precision("high" if step.tf32 else "highest")
    try:
        with LaunchRecorder(step.architecture) as recorder:
            loss = training_loss(model(images), labels)
            loss.backward()
    finally:
        torch.set_float32_matmul_precision(precision)
    return recorder.launches


def record(steps, archs) -> dict[tuple[str, int], list[Launch]]:
    """Each step's launches on each architecture (autotune pruning depends on it), keyed by (step name, arch), in
    this GPU-mode process."""
    return {(step.name, arch): record_training_step(dataclasses.replace(step, architecture=arch))
            for step in steps for arch in archs}


def _run_worker(steps, arguments: list[str], what: str):
    """Run this module in a ``TRITON_INTERPRET=0`` subprocess on ``steps`` and return the JSON it writes."""
    with tempfile.TemporaryDirectory() as folder:
        steps_path, out_path = os.path.join(folder, "steps.json"), os.path.join(folder, "out.json")
        with open(steps_path, "w") as handle:
            json.dump([dataclasses.asdict(step) for step in steps], handle)
        done = subprocess.run([sys.executable, "-m", "benchmarks.step_launches", "--steps", steps_path,
                               "--json", out_path, *arguments], env=gpu_mode_environment(), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{what} {', '.join(step.label for step in steps)} failed:\n{done.stdout[-4000:]}\n"
                               f"{done.stderr[-8000:]}")
        with open(out_path) as handle:
            return json.load(handle)


def record_steps(steps: list[Step]) -> dict[Step, list[Launch]]:
    """The launches of each training step on its own architecture, recorded in one subprocess."""
    if not steps:
        return {}
    recorded = _run_worker(steps, ["--record-only"], "recording")
    return {step: [Launch.from_json(launch) for launch in launches] for step, launches in zip(steps, recorded)}


def compile_steps_in_subprocess(steps=STEPS, archs=ARCHS, chosen_only: bool = False) -> list[dict[str, Any]]:
    """Record ``steps`` for ``archs`` and compile their launches (tritonnet.kernels.gpu_compile.compile_recorded), in
    one subprocess. Returns report rows, each naming the steps that launch it."""
    return _run_worker(steps, ["--archs", *map(str, archs), *(["--chosen-only"] if chosen_only else [])],
                       "compiling kernels for GPU:")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the report rows (or the recorded launches)")
    parser.add_argument("--steps", default=None, help="a JSON list of Step fields (default: STEPS)")
    parser.add_argument("--archs", nargs="+", type=int, default=list(ARCHS))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--chosen-only", action="store_true", help="only each launch's chosen (first) config")
    parser.add_argument("--record-only", action="store_true",
                        help="write each step's launches on its own architecture instead of compiling")
    args = parser.parse_args(argv)
    steps = STEPS
    if args.steps:
        with open(args.steps) as handle:
            steps = tuple(Step(**fields) for fields in json.load(handle))
    if args.record_only:
        result = [[launch.to_json() for launch in record_training_step(step)] for step in steps]
    else:
        result = compile_recorded(record(steps, tuple(args.archs)), args.workers, args.chosen_only)
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    from tritonnet.kernels import runtime

    if runtime.INTERPRET:
        raise SystemExit("benchmarks.step_launches records GPU launches: run it with TRITON_INTERPRET=0")
    main()
