"""Pure string work on the SVG that ``dot`` writes (no Graphviz needed here).

* :func:`tidy_svg` drops the XML prologue (an SVG inside HTML needs none),
  turns the placeholder links that make Graphviz 2.43 write table-cell ids
  into plain groups with a ``<title>`` tooltip (nothing to click, nothing to
  navigate to), and lets the drawing shrink to the width it is shown in.
* :func:`split_svgs` cuts the output of one ``dot`` run over several graphs
  into one SVG document per graph.
"""

from __future__ import annotations

import re

from .style import CELL_HREF

__all__ = ["tidy_svg", "split_svgs"]

_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_CELL_LINK = re.compile(
    r'<a xlink:href="' + re.escape(CELL_HREF) + r'" xlink:title="([^"]*)">\n?(.*?)</a>\n?',
    re.S)
_SIZE = re.compile(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"')


def tidy_svg(svg: str) -> str:
    """An SVG ready to be put inside HTML (see the module docstring).

    >>> tidy_svg('<?xml version="1.0"?>\\n<svg width="10pt" height="5pt" viewBox="0 0 10 5">'
    ...          '<g id="a_x"><a xlink:href="mmulib:cell" xlink:title="tip">\\n<text>1</text>\\n'
    ...          '</a>\\n</g></svg>')
    '<svg style="max-width:100%;height:auto" width="10pt" height="5pt" viewBox="0 0 10 5"><g \
id="a_x"><title>tip</title>\\n<text>1</text>\\n</g></svg>'
    """
    svg = _PROLOGUE.sub("", svg, count=1)
    svg = _CELL_LINK.sub(lambda m: f"<title>{m.group(1)}</title>\n{m.group(2)}", svg)
    return _SIZE.sub(lambda m: f'<svg style="max-width:100%;height:auto" width="{m.group(1)}pt" '
                               f'height="{m.group(2)}pt"', svg, count=1)


def split_svgs(text: str) -> list[str]:
    """The SVG documents in ``text`` (one ``dot -Tsvg`` run over several graphs).

    >>> split_svgs('<?xml a?>\\n<svg>1</svg>\\n<?xml b?>\\n<svg>2</svg>\\n')
    ['<?xml a?>\\n<svg>1</svg>\\n', '<?xml b?>\\n<svg>2</svg>\\n']
    """
    starts = [m.start() for m in re.finditer(r"<\?xml\b", text)]
    if not starts:
        return [text] if text.strip() else []
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
