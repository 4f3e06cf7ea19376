"""A very small DOT writer: deterministic text, no Graphviz needed.

:class:`Dot` collects graph attributes, nodes, edges and subgraphs in the
order they are added and writes them out with every attribute list sorted by
name (as xflr6/graphviz's ``_tools.mapping_items`` does), so the same calls
always give the same text.  Callers add nodes in a deterministic order (kernel
field order, sorted pages, slot order), never from a set or by ``id()``.

HTML-like labels are marked with :class:`Html`; everything else is quoted.

>>> g = Dot("demo", rankdir="LR")
>>> g.node("root", label="root: pgd 0x1000", shape="box")
>>> g.edge("root", "prev_roots_0", style="dashed")
>>> print(g.source, end="")
digraph demo {
  graph [rankdir="LR"];
  "root" [label="root: pgd 0x1000", shape="box"];
  "root" -> "prev_roots_0" [style="dashed"];
}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["Dot", "Html", "quote", "esc", "table", "row", "cell"]


class Html(str):
    """An HTML-like label: written as ``<...>`` instead of a quoted string."""


def quote(text: object) -> str:
    """A DOT double-quoted string (backslash escapes such as ``\\n`` are kept)."""
    return '"' + str(text).replace('"', '\\"') + '"'


def esc(text: object) -> str:
    """Escape text for an HTML-like label.

    >>> esc("a<b & c>")
    'a&lt;b &amp; c&gt;'
    """
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _attrs(attrs: Mapping[str, object]) -> str:
    parts = []
    for key in sorted(attrs):
        value = attrs[key]
        if value is None:
            continue
        parts.append(f"{key}=<{value}>" if isinstance(value, Html) else f"{key}={quote(value)}")
    return ", ".join(parts)


class Dot:
    """A digraph (or a subgraph of one) built up line by line."""

    def __init__(self, name: str, *, subgraph: bool = False, **graph_attrs: object) -> None:
        self.name = name
        self._subgraph = subgraph
        self._head: list[str] = []
        self._body: list[str] = []
        if graph_attrs:
            self.attr("graph", **graph_attrs)

    def attr(self, kind: str, **attrs: object) -> None:
        """Default attributes for ``graph``, ``node`` or ``edge``."""
        if kind not in ("graph", "node", "edge"):
            raise ValueError(f"unknown attribute kind: {kind!r} (must be graph, node or edge)")
        self._head.append(f"{kind} [{_attrs(attrs)}];")

    def node(self, node_id: str, **attrs: object) -> None:
        text = _attrs(attrs)
        self._body.append(f"{quote(node_id)} [{text}];" if text else f"{quote(node_id)};")

    def edge(self, tail: str, head: str, **attrs: object) -> None:
        text = _attrs(attrs)
        line = f"{_endpoint(tail)} -> {_endpoint(head)}"
        self._body.append(f"{line} [{text}];" if text else f"{line};")

    def same_rank(self, node_ids: Iterable[str]) -> None:
        ids = " ".join(quote(n) for n in node_ids)
        self._body.append(f"{{ rank=same; {ids} }}")

    def subgraph(self, name: str, **graph_attrs: object) -> Dot:
        """A subgraph written where it was created (``cluster_`` names draw a box)."""
        sub = Dot(name, subgraph=True, **graph_attrs)
        self._body.append(sub)  # type: ignore[arg-type]  # rendered lazily in .lines()
        return sub

    def lines(self, indent: str = "  ") -> list[str]:
        opener = f"subgraph {quote(self.name)} {{" if self._subgraph else f"digraph {self.name} {{"
        out = [opener]
        for item in [*self._head, *self._body]:
            if isinstance(item, Dot):
                out.extend(indent + line for line in item.lines(indent))
            else:
                out.append(indent + item)
        out.append("}")
        return out

    @property
    def source(self) -> str:
        return "\n".join(self.lines()) + "\n"


def _endpoint(node: str) -> str:
    """``node`` or ``node:port`` (the port written unquoted)."""
    if ":" in node:
        name, port = node.split(":", 1)
        return f"{quote(name)}:{port}"
    return quote(node)


# --- HTML-like tables ----------------------------------------------------------------------


def cell(text: object, **attrs: object) -> str:
    """One ``<TD>``: ``text`` is escaped unless it is :class:`Html`; attributes sorted."""
    body = text if isinstance(text, Html) else esc(text)
    at = "".join(f' {k.upper()}="{esc(v)}"' for k, v in sorted(attrs.items()) if v is not None)
    return f"<TD{at}>{body}</TD>"


def row(*cells: str) -> str:
    return "<TR>" + "".join(cells) + "</TR>"


def table(rows: Iterable[str], **attrs: object) -> Html:
    """A ``<TABLE>`` label; defaults: no outer border, one-pixel cell borders."""
    base: dict[str, object] = {"border": 0, "cellborder": 1, "cellspacing": 0, "cellpadding": 3}
    base.update(attrs)
    at = "".join(f' {k.upper()}="{esc(v)}"' for k, v in sorted(base.items()) if v is not None)
    return Html(f"<TABLE{at}>" + "".join(rows) + "</TABLE>")
