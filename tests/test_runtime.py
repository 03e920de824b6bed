"""tritonnet.kernels.runtime: the interpreter/GPU policy, the config style and concurrent interpreter launches."""

import threading

import pytest
import torch

import tritonnet.functional as F
from tritonnet.kernels import runtime


def test_algorithms_policy_follows_the_mode():
    expected = runtime.INTERPRETER_ALGORITHMS if runtime.INTERPRET else runtime.GPU_ALGORITHMS
    assert runtime.ALGORITHMS == expected
    assert all(runtime.dataclasses.astuple(runtime.INTERPRETER_ALGORITHMS))
    assert not any(runtime.dataclasses.astuple(runtime.GPU_ALGORITHMS))


def test_gpu_configs_rows_name_blocks_warps_and_stages():
    (config,) = runtime.gpu_configs(("BLOCK_ROWS", "BLOCK_COLUMNS"), [(64, 32, 4, 3)])
    assert config.kwargs == {"BLOCK_ROWS": 64, "BLOCK_COLUMNS": 32}
    assert (config.num_warps, config.num_stages) == (4, 3)
    with pytest.raises(ValueError, match="block sizes, warps and stages"):
        runtime.gpu_configs(("BLOCK_ROWS",), [(64, 4)])


@pytest.mark.skipif(not runtime.INTERPRET, reason="the interpreter's patching of triton.language is what races")
def test_concurrent_interpreter_launches_from_threads_are_safe():
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 3, 9, 9, generator=generator) for _ in range(4)]
    errors, results = [], {}

    def work(index):
        try:
            for _ in range(3):
                results[index] = F.max_pool2d(inputs[index], 3, 2)
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index, tensor in enumerate(inputs):
        torch.testing.assert_close(results[index], torch.nn.functional.max_pool2d(tensor, 3, 2))
