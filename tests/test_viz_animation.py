"""animation_html: matplotlib's player without any resource from outside the page."""
import re

import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

from edu_seg.viz.animation import animation_html


def test_the_player_needs_nothing_outside_the_page():
    fig = Figure(figsize=(2, 2))
    ax = fig.subplots()
    image = ax.imshow(np.zeros((4, 4)))
    anim = FuncAnimation(fig, lambda k: image.set_data(np.full((4, 4), k)), frames=3)
    original = anim.to_jshtml()
    assert "font-awesome" in original                 # what this function exists to remove
    html = animation_html(anim)
    assert "http://" not in html and "https://" not in html
    assert not re.search(r'class="fa ', html)
    assert html.count("<button") == original.count("<button") == 9
    for symbol in "◀⏮⏴⏸▶⏵⏭−+":
        assert symbol in html
    assert html._repr_html_() == str(html)
