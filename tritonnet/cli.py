"""Command-line helpers shared by the examples, the benchmarks and the profiler: ``--kernels op=provider,...``, and
model names in either spelling (:func:`model_name`).

    parser = argparse.ArgumentParser()
    add_kernels_argument(parser)
    args = parser.parse_args()
    with use_kernels(**args.kernels):   # tritonnet.use_kernels
        main(args)

``--kernels`` goes through :func:`tritonnet.registry.parse_kernels`, so it accepts exactly what
``TRITONNET_KERNELS`` accepts (``all=torch`` included); a bad entry is an argparse error that names it. The flag
may be repeated; later entries win. Choices made with ``--kernels`` beat ``TRITONNET_KERNELS``; a layer's own
``provider=`` beats both.
"""

from __future__ import annotations

import argparse

from tritonnet.registry import available_kernels, parse_kernels, provider_for


def parse_kernels_argument(text: str) -> dict[str, str]:
    """argparse ``type=`` for ``--kernels``: ``"op=provider,..."`` to ``{op: provider}``, or an argparse error
    naming the bad entry."""
    try:
        return parse_kernels(text, "--kernels")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class _MergeKernels(argparse.Action):
    """Repeated ``--kernels`` flags merge into one ``{op: provider}``; the last choice for an op wins."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), **values})


def add_kernels_argument(parser: argparse.ArgumentParser, *flags: str, dest: str = "kernels") -> argparse.Action:
    """Add ``--kernels op=provider,...`` to ``parser``; ``args.kernels`` is a ``{op: provider}`` dict (empty when
    the flag is absent) to pass to ``tritonnet.use_kernels(**args.kernels)``."""
    choices = "; ".join(f"{op}: {'/'.join(providers)}" for op, providers in available_kernels().items())
    return parser.add_argument(
        *(flags or ("--kernels",)), dest=dest, metavar="OP=PROVIDER[,...]", type=parse_kernels_argument,
        action=_MergeKernels, default={},
        help=f"choose a kernel provider per op, e.g. local_response_norm=torch; all=PROVIDER sets every op that has "
             f"it (beats TRITONNET_KERNELS). Available: {choices}")


def model_name(text: str) -> str:
    """argparse ``type=`` for a model flag: a model's command-line name (``alexnet-small``) from it or its Python
    name (``alexnet_small``); ``choices=`` then refuses an unknown one."""
    return text.replace("_", "-")


def describe_kernels() -> str:
    """The provider each op uses here and now, as ``op=provider,...`` (for logs and report headers; it parses
    back with ``--kernels``)."""
    return ",".join(f"{op}={provider_for(op)}" for op in available_kernels())


__all__ = ["add_kernels_argument", "describe_kernels", "model_name", "parse_kernels_argument"]
