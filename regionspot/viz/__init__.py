"""Drawing: recognised regions (boxes, masks, tags that never overlap, a legend for the regions
that got number tags) and attention maps (with a colour bar), shared by ``regionspot predict
--viz/--attention``, the evaluation's example images (ground truth beside the predictions,
:func:`side_by_side`) and the web page's colours."""

from regionspot.viz.attention import (
    HEAT_RAMP,
    add_heat_bar,
    draw_attention,
    draw_attention_figure,
    heat_colors,
    upsample_attention,
)
from regionspot.viz.comparison import side_by_side
from regionspot.viz.regions import CONTOUR_ONLY_AREA, draw_regions, save_figure
from regionspot.viz.style import PALETTE, contrast_text_color, region_color

__all__ = [
    "CONTOUR_ONLY_AREA", "HEAT_RAMP", "PALETTE", "add_heat_bar", "contrast_text_color", "draw_attention",
    "draw_attention_figure", "draw_regions", "heat_colors", "region_color", "save_figure", "side_by_side",
    "upsample_attention",
]
