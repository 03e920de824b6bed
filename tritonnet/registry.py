"""Which implementation ("provider") each op uses: the one source of truth for swapping kernels.

Every op has named implementations: ``"triton"`` (ours, the default) and ``"torch"`` (the reference, composed from
PyTorch ops with the same semantics). A provider is chosen, from strongest to weakest:

1. per call or per layer: ``provider=`` on a functional call or a module;
2. in code: ``with tritonnet.use_kernels(local_response_norm="torch"): ...`` (nests; thread- and task-local);
3. from the environment: ``TRITONNET_KERNELS="local_response_norm=torch,max_pool2d=triton"``;
4. the default: ``"triton"``, or the ``"torch"`` reference for an op that has no Triton kernel.

Tests, benchmarks and the profiler iterate over :func:`available_kernels`, so a newly registered provider is tested,
benchmarked and profiled without new code.

Under ``torch.compile`` a ContextVar cannot be traced, so the choices of 2 and 3 in force are mirrored in a plain
dict (``_choices_in_force``) that compiled code reads and guards on: entering or leaving a ``use_kernels`` block, or
re-reading the environment, recompiles a compiled function rather than keeping the old kernel. The mirror holds the
choices of the thread that last entered or left a block, so under ``torch.compile`` choose providers from one thread
(or per layer, with ``provider=``). The environment is read when the first layer is built or the first op is called
outside ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable, Iterator

import torch

DEFAULT_PROVIDER = "triton"
REFERENCE_PROVIDER = "torch"  # every op has it; the fallback where an op lacks the default
ENVIRONMENT_VARIABLE = "TRITONNET_KERNELS"

_implementations: dict[str, dict[str, Callable]] = {}
_overrides: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("tritonnet_kernels", default={})
_environment_choices: dict[str, str] | None = None
_choices_in_force: dict[str, str] = {}  # the environment's choices overridden by use_kernels', for torch.compile


def _mirror_choices() -> None:
    """Update ``_choices_in_force`` in place (compiled code guards on its contents) to this thread's choices."""
    _choices_in_force.clear()
    _choices_in_force.update({**_from_environment(), **_overrides.get()})


def register(op: str, provider: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as ``provider``'s implementation of ``op``."""

    def decorate(fn: Callable) -> Callable:
        providers = _implementations.setdefault(op, {})
        if provider in providers:
            raise ValueError(f"op {op!r} already has a provider named {provider!r}")
        providers[provider] = fn
        return fn

    return decorate


def provider_order(provider: str) -> tuple[bool, bool, str]:
    """The sort key every list of providers follows: the default first, then the reference, then the others by
    name. The first an op has is what it uses when nothing else is chosen."""
    return provider != DEFAULT_PROVIDER, provider != REFERENCE_PROVIDER, provider


def available_kernels() -> dict[str, list[str]]:
    """``{op_name: [provider, ...]}`` for every registered op: the default provider first, then the reference,
    then the others by name. The first is what the op uses when nothing else is chosen."""
    return {op: sorted(providers, key=provider_order) for op, providers in sorted(_implementations.items())}


def _check_choice(op: str, provider: str, source: str) -> None:
    if op not in _implementations:
        raise ValueError(f"unknown op {op!r} in {source}; ops are: {', '.join(sorted(_implementations))}")
    if provider not in _implementations[op]:
        raise ValueError(f"unknown provider {provider!r} for op {op!r} in {source}; "
                         f"providers are: {', '.join(available_kernels()[op])}")


def parse_kernels(spec: str, source: str = "--kernels") -> dict[str, str]:
    """Parse ``"op=provider,op=provider"`` (as in ``TRITONNET_KERNELS`` and ``--kernels``), checking every name.

    ``"all=torch"`` chooses a provider for every op that has it.
    """
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        op, sep, provider = (part.strip() for part in item.partition("="))
        if not sep or not op or not provider:
            raise ValueError(f"malformed entry {item!r} in {source}: expected op=provider, e.g. "
                             f"'local_response_norm=torch'")
        pairs.append((op, provider))
    return _expand(pairs, source)


def _expand(pairs: list[tuple[str, str]], source: str) -> dict[str, str]:
    """``[(op, provider), ...]`` to ``{op: provider}``, checking every name; ``("all", provider)`` chooses
    ``provider`` for every op that has it. Later pairs win."""
    choices: dict[str, str] = {}
    for op, provider in pairs:
        if op == "all":
            if not any(provider in providers for providers in _implementations.values()):
                raise ValueError(f"unknown provider {provider!r} in {source}")
            choices.update({name: provider for name, providers in _implementations.items() if provider in providers})
            continue
        _check_choice(op, provider, source)
        choices[op] = provider
    return choices


def _from_environment() -> dict[str, str]:
    global _environment_choices
    if _environment_choices is None:
        _environment_choices = parse_kernels(os.environ.get(ENVIRONMENT_VARIABLE, ""), ENVIRONMENT_VARIABLE)
        _mirror_choices()
    return _environment_choices


def reload_environment() -> dict[str, str]:
    """Re-read ``TRITONNET_KERNELS`` (it is read once, on first use)."""
    global _environment_choices
    _environment_choices = None
    return _from_environment()


@contextlib.contextmanager
def use_kernels(**choices: str) -> Iterator[None]:
    """Choose providers for a block: ``with use_kernels(local_response_norm="torch", conv2d="triton"): ...``.

    ``all="torch"`` chooses a provider for every op that has it, as in ``--kernels``; the other keywords win over it.
    """
    pairs = sorted(choices.items(), key=lambda pair: pair[0] != "all")  # "all" first, so named ops win
    token = _overrides.set({**_overrides.get(), **_expand(pairs, "use_kernels()")})
    _mirror_choices()
    try:
        yield
    finally:
        _overrides.reset(token)
        _mirror_choices()


def provider_for(op: str, provider: str | None = None) -> str:
    """The provider ``op`` uses here and now (``provider`` given explicitly wins)."""
    if op not in _implementations:
        raise ValueError(f"unknown op {op!r}; ops are: {', '.join(sorted(_implementations))}")
    if provider is not None:
        _check_choice(op, provider, "provider=")
        return provider
    if torch.compiler.is_compiling():
        chosen = _choices_in_force.get(op)
    else:
        chosen = _overrides.get().get(op) or _from_environment().get(op)
    if chosen is not None:
        return chosen
    return min(_implementations[op], key=provider_order)


def lookup(op: str, provider: str | None = None) -> Callable:
    """The implementation of ``op`` to call (see the module docstring for how it is chosen)."""
    return _implementations[op][provider_for(op, provider)]
