"""Packages whose names are imported when first used, so that importing one light module of a
package (the configuration's) does not import torch through the package's ``__init__``."""

from collections.abc import Callable
from importlib import import_module


def exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """A package's ``__getattr__`` and ``__all__`` for ``homes``: each name's module in it."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{homes[name]}"), name)

    return __getattr__, sorted(homes)
