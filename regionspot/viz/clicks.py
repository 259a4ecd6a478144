"""Click markers: where the user clicked to prompt a region (``predict --points ... --viz``).

A foreground click (label 1) is a disc in its region's colour with a white ring and a dark rim;
a background click (label 0: "not this") is a dark disc with a white cross, so the two read apart
on any photo and in grey-scale print. Sizes follow the picture's :class:`~regionspot.viz.style.Style`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import ImageDraw

from regionspot.viz.style import RGB, RIM, WHITE, Style

#: One region's clicks: xy absolute pixels float ``[P, 2]`` and labels ``[P]`` (1 fore-, 0 background).
RegionClicks = tuple[np.ndarray, np.ndarray]


def check_clicks(clicks: Sequence[RegionClicks], regions: int) -> None:
    """``clicks`` must hold one ``(points [P, 2], labels [P])`` pair per region (``ValueError``)."""
    if len(clicks) != regions:
        raise ValueError(f"clicks must be given for each of the {regions} regions, got {len(clicks)}")
    for index, (points, labels) in enumerate(clicks):
        points, labels = np.asarray(points), np.asarray(labels)
        if points.ndim != 2 or points.shape[1:] != (2,) or labels.shape != points.shape[:1]:
            raise ValueError(f"clicks[{index}] must be (points [P, 2], labels [P]), got shapes "
                             f"{list(points.shape)} and {list(labels.shape)}")


def draw_clicks(draw: ImageDraw.ImageDraw, clicks: Sequence[RegionClicks], order: Sequence[int],
                color_of: Callable[[int], RGB], style: Style) -> None:
    """Markers for the clicks of the regions in ``order`` (last on top) onto ``draw``."""
    radius = max(4, style.line * 3)
    for region in order:
        points, labels = clicks[region]
        for (x, y), label in zip(np.asarray(points, dtype=float), np.asarray(labels), strict=True):
            disc = (x - radius, y - radius, x + radius, y + radius)
            if int(label) == 1:
                draw.ellipse(disc, fill=color_of(int(region)), outline=WHITE, width=max(1, radius // 3))
                draw.ellipse((x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1), outline=RIM, width=1)
            else:
                draw.ellipse(disc, fill=RIM, outline=WHITE, width=1)
                arm = radius * 0.55
                for dx in (-arm, arm):
                    draw.line((x - arm, y + dx, x + arm, y - dx), fill=WHITE, width=max(1, radius // 3))
