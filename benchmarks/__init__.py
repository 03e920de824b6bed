"""Kernel and model benchmarks against PyTorch eager and torch.compile (see benchmarks/README.md)."""
