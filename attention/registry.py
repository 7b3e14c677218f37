"""A tiny name -> builder registry.

Contract: ``register(name)`` decorates a builder (a class or function); ``build(name, **kwargs)`` calls it
with keyword arguments only. Unknown names are refused with the list of known ones, so a typo in a
configuration fails before any training starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attention import AttentionError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._builders[name] = builder
            return builder

        return decorate

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise AttentionError(f"unknown {self.kind} '{name}'; use one of {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)
