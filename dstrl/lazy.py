"""Packages whose names are imported when first used, so that importing one light module of a
package (the configuration's) does not import torch through the package's ``__init__``."""

import sys
from collections.abc import Callable
from importlib import import_module


def exports(
    package: str, homes: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """A package's ``__getattr__``, ``__dir__`` and ``__all__`` for ``homes``: each name's module
    in it."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{homes[name]}"), name)

    def __dir__() -> list[str]:  # for completion and help(), which do not call __getattr__
        return sorted({*homes, *vars(sys.modules[package])})

    return __getattr__, __dir__, sorted(homes)
