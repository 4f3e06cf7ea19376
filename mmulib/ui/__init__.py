"""The control panel and its views (ipywidgets), loaded only when used.

In a notebook::

    from mmulib.ui import Panel
    Panel(kernel="6.4", tdp="ept")

Also here: :class:`EraComparison` (two releases, the same clicks) and
:class:`~mmulib.ui.tdp.TdpExplorer` (the TDP MMU tree explorer).

``import mmulib.ui`` itself imports no Jupyter package: the widget classes are
loaded on first access, so the pure parts (:mod:`mmulib.ui.session`,
:mod:`mmulib.ui.explain`) work where ipywidgets is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Panel", "EraComparison", "Session", "Refused", "TdpExplorer"]

_LAZY = {
    "Panel": "mmulib.ui.panel",
    "EraComparison": "mmulib.ui.panel",
    "Session": "mmulib.ui.session",
    "Refused": "mmulib.ui.session",
    "TdpExplorer": "mmulib.ui.tdp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmulib.ui' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
