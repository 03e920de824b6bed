"""Registry spies for dispatch tests: record which provider each op call went to, and add a stand-in provider, so
dispatch is tested whatever providers are registered. Both undo themselves through pytest's ``monkeypatch``."""

from __future__ import annotations

from tritonnet import registry

REFERENCE = "torch"


def record_calls(monkeypatch, *, run_reference: bool = True) -> list[tuple[str, str]]:
    """Wrap every registered implementation so each call appends ``(op, provider)`` to the returned list. With
    ``run_reference`` the call does the ``"torch"`` reference's work whichever provider was chosen (a dispatch test
    then costs no interpreter time)."""
    calls: list[tuple[str, str]] = []
    for op, providers in list(registry._implementations.items()):
        wrapped = {}
        for provider, implementation in providers.items():
            target = providers[REFERENCE] if run_reference else implementation

            def spy(*args, _op=op, _provider=provider, _target=target):
                calls.append((_op, _provider))
                return _target(*args)

            wrapped[provider] = spy
        monkeypatch.setitem(registry._implementations, op, wrapped)
    return calls


def add_provider(monkeypatch, provider: str, ops=None) -> None:
    """Register ``provider`` for ``ops`` (default: every op) as a stand-in that runs the ``"torch"`` reference."""
    for op in list(registry._implementations) if ops is None else ops:
        providers = registry._implementations[op]
        monkeypatch.setitem(registry._implementations, op, {**providers, provider: providers[REFERENCE]})


def every_op(provider: str) -> dict[str, str]:
    """``use_kernels`` choices putting every op that has ``provider`` on it (the others keep the registry's
    choice, as ``all=provider`` does)."""
    return {op: provider for op, providers in registry.available_kernels().items() if provider in providers}
