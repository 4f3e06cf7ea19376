"""mmulib: KVM x86 MMU roles, contexts and root caches, exactly, release by release.

>>> from mmulib import decode
>>> era, role, _ = decode(0x3784, "v6.6.47")
>>> era.name, role.level, role.direct
('6.4', 4, 1)

The model modules import nothing from Jupyter or graphviz; drawing and widgets
live in :mod:`mmulib.draw` and :mod:`mmulib.ui`.
"""

from .eras import ERAS, Era, UnknownReleaseError, resolve
from .layouts import Layout, LayoutError
from .request import Request, RequestError
from .roles import CpuRole, FieldChange, Role, decode

__version__ = "0.1.0"

__all__ = [
    "ERAS",
    "Era",
    "UnknownReleaseError",
    "resolve",
    "Layout",
    "LayoutError",
    "Request",
    "RequestError",
    "CpuRole",
    "FieldChange",
    "Role",
    "decode",
    "show",
]


def __getattr__(name: str) -> object:
    """``mmulib.show`` is loaded on first use (drawing helpers; it imports no Jupyter package)."""
    if name == "show":
        import importlib

        return importlib.import_module(".show", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
