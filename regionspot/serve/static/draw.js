/* Canvas drawing for the RegionSpot page: the same palette, heat ramp, tag and contrast rules
 * as regionspot/viz.py (boxes, translucent masks with a solid contour, "name 0.87" tags with
 * black or white text, attention maps upsampled bilinearly over the whole image).
 * Exposed as window.RegionSpotDraw.
 */
(function () {
  "use strict";

  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40], [128, 128, 0],
    [250, 190, 212], [128, 0, 0],
  ];
  // Google's Turbo sampled at 9 even steps, low -> high attention (viz.HEAT_RAMP).
  const HEAT_RAMP = [
    [48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 242, 152], [164, 252, 60],
    [238, 207, 58], [251, 126, 33], [208, 47, 5], [122, 4, 3],
  ];
  const RIM = "rgb(20, 20, 20)";

  function regionColor(index) {
    return PALETTE[index % PALETTE.length];
  }

  function css(rgb, alpha) {
    return alpha === undefined ? "rgb(" + rgb.join(",") + ")" : "rgba(" + rgb.join(",") + "," + alpha + ")";
  }

  /** WCAG relative luminance of an sRGB colour [r, g, b] (0..255). */
  function luminance(rgb) {
    const linear = rgb.map(function (value) {
      const c = value / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  }

  /** Black or white, whichever contrasts more with the background colour. */
  function contrastText(rgb) {
    const lum = luminance(rgb);
    return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? [0, 0, 0] : [255, 255, 255];
  }

  /** A value in [0, 1] -> [r, g, b] on the heat ramp (linear between its 9 colours). */
  function heatColor(value) {
    const position = Math.min(Math.max(value, 0), 1) * (HEAT_RAMP.length - 1);
    const low = Math.min(Math.floor(position), HEAT_RAMP.length - 2);
    const frac = position - low;
    return [0, 1, 2].map(function (c) {
      return Math.round(HEAT_RAMP[low][c] * (1 - frac) + HEAT_RAMP[low + 1][c] * frac);
    });
  }

  /** Bounding rectangle [x0, y0, x1, y1] (inclusive) of the 1s of a row-major mask, or null. */
  function maskBounds(data, width, height) {
    let x0 = width;
    let y0 = height;
    let x1 = -1;
    let y1 = -1;
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        if (!data[y * width + x]) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
    return x1 < 0 ? null : [x0, y0, x1, y1];
  }

  /** `times` steps of 4-neighbour erosion inside `bounds` (outside the image counts as empty). */
  function erode(data, width, height, bounds, times) {
    let current = data;
    for (let step = 0; step < times; step += 1) {
      const next = new Uint8Array(current.length);
      for (let y = Math.max(bounds[1], 1); y <= Math.min(bounds[3], height - 2); y += 1) {
        for (let x = Math.max(bounds[0], 1); x <= Math.min(bounds[2], width - 2); x += 1) {
          const i = y * width + x;
          next[i] = current[i] & current[i - 1] & current[i + 1] & current[i - width] & current[i + width];
        }
      }
      current = next;
    }
    return current;
  }

  /**
   * Masks -> an offscreen canvas at image resolution: each mask a translucent fill (opacity
   * `alpha`) in its region colour with a solid contour about one screen pixel wide (thicker
   * for large images, which are shown scaled down). masks[i] is {height, width, data}
   * (row-major 0/1, see rle.js) or null; `order` lists region indices, painted first to last.
   */
  function maskOverlay(masks, order, width, height, alpha) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(width, height);
    const out = pixels.data;
    const fill = Math.round(alpha * 255);
    const contour = Math.max(1, Math.round(Math.max(width, height) / 640));
    order.forEach(function (index) {
      const mask = masks[index];
      if (!mask || mask.width !== width || mask.height !== height) return;
      const bounds = maskBounds(mask.data, width, height);
      if (!bounds) return;
      const inner = erode(mask.data, width, height, bounds, contour);
      const color = regionColor(index);
      for (let y = bounds[1]; y <= bounds[3]; y += 1) {
        for (let x = bounds[0]; x <= bounds[2]; x += 1) {
          const i = y * width + x;
          if (!mask.data[i]) continue;
          out[4 * i] = color[0];
          out[4 * i + 1] = color[1];
          out[4 * i + 2] = color[2];
          out[4 * i + 3] = inner[i] ? fill : 255;
        }
      }
    });
    context.putImageData(pixels, 0, 0);
    return canvas;
  }

  /** Box outline [x0, y0, x1, y1] (canvas pixels) with a dark rim; dashed when pending. */
  function strokeBox(context, box, rgb, width, dashed) {
    const w = box[2] - box[0];
    const h = box[3] - box[1];
    context.save();
    context.setLineDash(dashed ? [6, 4] : []);
    context.lineWidth = width + 2;
    context.strokeStyle = RIM;
    context.strokeRect(box[0], box[1], w, h);
    context.lineWidth = width;
    context.strokeStyle = css(rgb);
    context.strokeRect(box[0], box[1], w, h);
    context.restore();
  }

  function overlaps(a, b) {
    return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
  }

  /** Places for a tag [x0, y0, x1, y1], preferred first: above the box, inside its top, below, inside its bottom. */
  function tagCandidates(box, tagW, tagH, width, height) {
    const left = Math.max(0, Math.min(box[0], width - tagW));
    const places = [box[1] - tagH, box[1], box[3], box[3] - tagH]
      .filter(function (top) { return top >= 0 && top + tagH <= height; })
      .map(function (top) { return [left, top, left + tagW, top + tagH]; });
    return places.length ? places : [[left, 0, left + tagW, tagH]];
  }

  /**
   * Tags "name 0.87" for items [{box (canvas pixels), text, rgb}] given in increasing score
   * order: placed best first, each at its first candidate overlapping no tag placed before
   * (else its first candidate), drawn worst first so the best tag is on top (as viz.py does).
   */
  function drawTags(context, items, fontPx) {
    context.save();
    context.font = fontPx + "px system-ui, sans-serif";
    context.textBaseline = "top";
    const pad = Math.max(2, Math.round(fontPx * 0.25));
    const placed = [];
    const places = new Array(items.length);
    for (let i = items.length - 1; i >= 0; i -= 1) {
      const tagW = context.measureText(items[i].text).width + 2 * pad;
      const options = tagCandidates(items[i].box, tagW, fontPx + 2 * pad, context.canvas.width, context.canvas.height);
      const free = options.filter(function (c) { return !placed.some(function (p) { return overlaps(c, p); }); });
      places[i] = free.length ? free[0] : options[0];
      placed.push(places[i]);
    }
    items.forEach(function (item, i) {
      const tag = places[i];
      context.fillStyle = css(item.rgb);
      context.fillRect(tag[0], tag[1], tag[2] - tag[0], tag[3] - tag[1]);
      context.strokeStyle = RIM;
      context.lineWidth = 1;
      context.strokeRect(tag[0] + 0.5, tag[1] + 0.5, tag[2] - tag[0] - 1, tag[3] - tag[1] - 1);
      context.fillStyle = css(contrastText(item.rgb));
      context.fillText(item.text, tag[0] + pad, tag[1] + pad);
    });
    context.restore();
  }

  /**
   * Bilinear upsampling of a [g][g] grid to width x height (pixel-centre aligned, edges
   * clamped, like PIL), divided by its maximum: a Float32Array in row-major order.
   */
  function upsampleGrid(grid, width, height) {
    const rows = grid.length;
    const cols = grid[0].length;
    const out = new Float32Array(width * height);
    let peak = 0;
    for (let y = 0; y < height; y += 1) {
      const gy = Math.min(Math.max((y + 0.5) * rows / height - 0.5, 0), rows - 1);
      const y0 = Math.floor(gy);
      const y1 = Math.min(y0 + 1, rows - 1);
      const fy = gy - y0;
      for (let x = 0; x < width; x += 1) {
        const gx = Math.min(Math.max((x + 0.5) * cols / width - 0.5, 0), cols - 1);
        const x0 = Math.floor(gx);
        const x1 = Math.min(x0 + 1, cols - 1);
        const fx = gx - x0;
        const top = grid[y0][x0] * (1 - fx) + grid[y0][x1] * fx;
        const bottom = grid[y1][x0] * (1 - fx) + grid[y1][x1] * fx;
        const value = top * (1 - fy) + bottom * fy;
        out[y * width + x] = value;
        if (value > peak) peak = value;
      }
    }
    if (peak > 0) for (let i = 0; i < out.length; i += 1) out[i] /= peak;
    return out;
  }

  /**
   * The attention figure on `canvas`: the image scaled to the canvas, the heat map of `grid`
   * blended over it with opacity `alpha`, and the region's box and tag (box in image pixels).
   */
  function drawAttention(canvas, image, grid, box, scale, tagText, rgb, alpha) {
    const context = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    context.drawImage(image, 0, 0, width, height);
    const photo = context.getImageData(0, 0, width, height);
    const heat = upsampleGrid(grid, width, height);
    const data = photo.data;
    for (let i = 0; i < heat.length; i += 1) {
      const color = heatColor(heat[i]);
      for (let c = 0; c < 3; c += 1) data[4 * i + c] = Math.round(data[4 * i + c] * (1 - alpha) + color[c] * alpha);
    }
    context.putImageData(photo, 0, 0);
    const scaled = box.map(function (v) { return v * scale; });
    strokeBox(context, scaled, rgb, 2, false);
    drawTags(context, [{ box: scaled, text: tagText, rgb: rgb }], 13);
  }

  window.RegionSpotDraw = {
    PALETTE: PALETTE, HEAT_RAMP: HEAT_RAMP, regionColor: regionColor, css: css, contrastText: contrastText,
    heatColor: heatColor, maskOverlay: maskOverlay, strokeBox: strokeBox, drawTags: drawTags,
    upsampleGrid: upsampleGrid, drawAttention: drawAttention,
  };
})();
