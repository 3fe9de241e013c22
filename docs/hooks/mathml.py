"""MkDocs hook: the site's TeX, rendered to MathML when the site is built, so pages need no script
and no network to show their equations.

``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and ``$$...$$`` in pages and docstrings as
``<span class="arithmatex">\\(...\\)</span>`` and ``<div class="arithmatex">\\[...\\]</div>``; this
hook replaces each with the MathML that ``latex2mathml`` makes of it, which browsers draw natively.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.DOTALL)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.DOTALL)


def on_post_page(output: str, **_: object) -> str:
    """Every marked equation of a rendered page, as MathML."""
    output = _BLOCK.sub(lambda m: _mathml(m.group(1), "block"), output)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), output)


def _mathml(tex: str, display: str) -> str:
    return convert(html.unescape(tex).strip(), display=display)
