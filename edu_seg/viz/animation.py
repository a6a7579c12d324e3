"""Animations as self-contained HTML, for notebooks and the course website.

Matplotlib's ``anim.to_jshtml()`` embeds every frame and a small player, but draws the
player's buttons with an icon font fetched from a CDN: offline (a classroom, this project's
build machines) the stylesheet fails to load, the browser logs an error, and the buttons are
blank. :func:`animation_html` returns the same player with the stylesheet link removed and
each icon replaced by a Unicode symbol, so it needs nothing outside the page.
"""
import re

__all__ = ["animation_html", "AnimationHTML"]

#: Matplotlib's Font Awesome icon classes -> the symbol drawn instead.
ICONS = {
    "fa fa-play fa-flip-horizontal": "◀",
    "fa fa-fast-backward": "⏮", "fa fa-step-backward": "⏴", "fa fa-pause": "⏸",
    "fa fa-play": "▶", "fa fa-step-forward": "⏵", "fa fa-fast-forward": "⏭",
    "fa fa-minus": "−", "fa fa-plus": "+",
}
_STYLESHEET = re.compile(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">')
_ICON = re.compile(r'<i class="(fa [^"]+)"></i>')


class AnimationHTML(str):
    """An HTML string that Jupyter displays as HTML (the last expression of a cell)."""

    def _repr_html_(self):
        return str(self)


def animation_html(anim):
    """The player of a :class:`matplotlib.animation.Animation` as offline-safe HTML.

    Parameters
    ----------
    anim : matplotlib.animation.Animation

    Returns
    -------
    AnimationHTML
        ``anim.to_jshtml()`` without its CDN stylesheet, icons drawn as Unicode symbols.

    Raises
    ------
    ValueError
        If the player uses an icon this function does not know (a newer matplotlib): the
        message names it, rather than leaving a blank button.
    """
    html = _STYLESHEET.sub("", anim.to_jshtml())

    def symbol(match):
        if match.group(1) not in ICONS:
            raise ValueError(f"animation_html: unknown player icon {match.group(1)!r}; add it "
                             f"to edu_seg.viz.animation.ICONS")
        return ICONS[match.group(1)]

    return AnimationHTML(_ICON.sub(symbol, html))
