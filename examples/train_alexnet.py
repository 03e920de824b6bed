"""Train AlexNet with tritonnet's Triton kernels.

    python examples/train_alexnet.py                      # Fashion-MNIST; a few-minute demo without a GPU
    python examples/train_alexnet.py --data ~/imagenet    # the paper's recipe on ImageNet-style folders
    torchrun --nproc_per_node=8 examples/train_alexnet.py --data ~/imagenet --amp
    python examples/train_alexnet.py --help               # every flag

A thin command line over :mod:`tritonnet.train`, where the loop, the recipe and the outputs are described.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from tritonnet.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
