"""Storage that front-ends keep of their own, behind the storage layer.

A front-end's tables and queries live here, in ``store/``, and reach it as a typed
repository through ``CertificateAuthority.repository(name)`` (Boulder's storage
authority holds orders and authorizations for its web front-end the same way). Each
repository module registers a factory under its front-end's name.
"""

from __future__ import annotations

from collections.abc import Callable

from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind
from certwright.store.repo import Store

Factory = Callable[[Store, Clock], object]

_FACTORIES: dict[str, Factory] = {}


def register(kind: str, factory: Factory) -> None:
    _FACTORIES[kind] = factory


def open_repository(kind: str, store: Store, clock: Clock) -> object:
    if kind not in _FACTORIES:
        _load()
    try:
        factory = _FACTORIES[kind]
    except KeyError:
        raise CertwrightError(ErrorKind.INTERNAL, f"no storage named {kind!r}") from None
    return factory(store, clock)


def _load() -> None:
    """Import the storage modules that register themselves (all of ``store/``)."""
    import importlib
    import pkgutil

    import certwright.store as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg and info.name not in {"repositories"}:
            importlib.import_module(f"certwright.store.{info.name}")
