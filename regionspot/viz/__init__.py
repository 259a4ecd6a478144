"""Drawing: recognised regions (boxes, masks, tags) and attention maps, shared by
``regionspot predict --viz/--attention``, the evaluation's example images (ground truth beside the
predictions, :func:`side_by_side`) and the web page's colours."""

from regionspot.viz.attention import HEAT_RAMP, draw_attention, draw_attention_figure, heat_colors, upsample_attention
from regionspot.viz.comparison import side_by_side
from regionspot.viz.regions import PALETTE, contrast_text_color, draw_regions, region_color, save_figure

__all__ = [
    "HEAT_RAMP", "PALETTE", "contrast_text_color", "draw_attention", "draw_attention_figure", "draw_regions",
    "heat_colors", "region_color", "save_figure", "side_by_side", "upsample_attention",
]
