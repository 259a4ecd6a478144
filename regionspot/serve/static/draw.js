/* Canvas drawing for the RegionSpot page, with the same palette, heat ramp and contrast rules as
 * regionspot/viz (boxes with a dark rim, translucent masks with a solid contour, attention maps
 * upsampled bilinearly over the whole image), plus the page's own marks: click dots and the
 * heat-map colour bar. Label placement lives in labels.js.
 * An ES module: import {PALETTE, maskOverlay, ...} from "./draw.js".
 */

export const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40], [128, 128, 0],
  [250, 190, 212], [128, 0, 0],
];
// Google's Turbo sampled at 9 even steps, low -> high attention (viz.HEAT_RAMP): dark blue,
// blue, cyan, green, yellow-green, yellow, orange, red, dark red.
export const HEAT_RAMP = [
  [48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 242, 152], [164, 252, 60],
  [238, 207, 58], [251, 126, 33], [208, 47, 5], [122, 4, 3],
];
export const RIM = "rgb(20, 20, 20)";
export const FOREGROUND_DOT = [40, 200, 70];  // a click on the object (label 1)
export const BACKGROUND_DOT = [230, 30, 40];  // a click on the background (label 0)
// a mask covering more than this share of the image is drawn as its contour only (as viz does)
export const LARGE_MASK_SHARE = 0.5;

export function regionColor(index) {
  return PALETTE[index % PALETTE.length];
}

export function css(rgb, alpha) {
  return alpha === undefined ? "rgb(" + rgb.join(",") + ")" : "rgba(" + rgb.join(",") + "," + alpha + ")";
}

/** WCAG relative luminance of an sRGB colour [r, g, b] (0..255). */
function luminance(rgb) {
  const linear = rgb.map((value) => {
    const c = value / 255;
    return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
}

/** Black or white, whichever contrasts more with the background colour. */
export function contrastText(rgb) {
  const lum = luminance(rgb);
  return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? [0, 0, 0] : [255, 255, 255];
}

/** A value in [0, 1] -> [r, g, b] on the heat ramp (linear between its 9 colours). */
export function heatColor(value) {
  const position = Math.min(Math.max(value, 0), 1) * (HEAT_RAMP.length - 1);
  const low = Math.min(Math.floor(position), HEAT_RAMP.length - 2);
  const frac = position - low;
  return [0, 1, 2].map((c) => Math.round(HEAT_RAMP[low][c] * (1 - frac) + HEAT_RAMP[low + 1][c] * frac));
}

// ------------------------------------------------------------------------------------ masks
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
 * A decoded mask {height, width, data} (rle.js) -> what maskOverlay paints, computed once per
 * region: {mask, bounds, inner (the mask less its contour), area (pixels), large (more than
 * LARGE_MASK_SHARE of the image)}, or null for an empty mask. The contour is about one screen
 * pixel wide (thicker for large images, which are shown scaled down).
 */
export function prepareMask(mask) {
  const { width, height, data } = mask;
  const bounds = maskBounds(data, width, height);
  if (!bounds) return null;
  let area = 0;
  for (let i = 0; i < data.length; i += 1) area += data[i];
  const contour = Math.max(1, Math.round(Math.max(width, height) / 640));
  const inner = erode(data, width, height, bounds, contour);
  return { mask, bounds, inner, area, large: area > LARGE_MASK_SHARE * width * height };
}

/**
 * Prepared masks -> an offscreen canvas at image resolution. items: [{shape (prepareMask),
 * rgb}] painted first to last; each a translucent fill (opacity `alpha`) in its colour with a
 * solid contour, or the contour alone for a large mask (a whole-image proposal would tint the
 * whole photo otherwise).
 */
export function maskOverlay(items, width, height, alpha) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(width, height);
  const out = pixels.data;
  const fill = Math.round(alpha * 255);
  items.forEach((item) => {
    const shape = item.shape;
    if (!shape || shape.mask.width !== width || shape.mask.height !== height) return;
    const { mask, bounds, inner } = shape;
    const inside = shape.large ? 0 : fill;
    for (let y = bounds[1]; y <= bounds[3]; y += 1) {
      for (let x = bounds[0]; x <= bounds[2]; x += 1) {
        const i = y * width + x;
        if (!mask.data[i] || (inner[i] && !inside)) continue;
        out[4 * i] = item.rgb[0];
        out[4 * i + 1] = item.rgb[1];
        out[4 * i + 2] = item.rgb[2];
        out[4 * i + 3] = inner[i] ? inside : 255;
      }
    }
  });
  context.putImageData(pixels, 0, 0);
  return canvas;
}

// ------------------------------------------------------------------------------------ marks
/** Box outline [x0, y0, x1, y1] (canvas pixels) with a dark rim; dashed when pending. */
export function strokeBox(context, box, rgb, width, dashed) {
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

/** A click at [x, y] (canvas pixels): a filled dot, green on the object, red on the background. */
export function drawDot(context, point, foreground, radius) {
  context.save();
  context.beginPath();
  context.arc(point[0], point[1], radius, 0, 2 * Math.PI);
  context.fillStyle = css(foreground ? FOREGROUND_DOT : BACKGROUND_DOT);
  context.fill();
  context.lineWidth = 2;
  context.strokeStyle = "white";
  context.stroke();
  context.lineWidth = 1;
  context.strokeStyle = RIM;
  context.beginPath();
  context.arc(point[0], point[1], radius + 1.5, 0, 2 * Math.PI);
  context.stroke();
  context.restore();
}

// -------------------------------------------------------------------------------- attention
/**
 * Bilinear upsampling of a [g][g] grid to width x height (pixel-centre aligned, edges
 * clamped, like PIL), divided by its maximum: a Float32Array in row-major order.
 */
export function upsampleGrid(grid, width, height) {
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
 * The attention figure on `canvas`: the image scaled to the canvas and the heat map of `grid`
 * blended over it with opacity `alpha` (the caller adds the region's box and tag).
 */
export function drawHeat(canvas, image, grid, alpha) {
  const context = canvas.getContext("2d", { willReadFrequently: true });
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
  return context;
}

/** The heat ramp left (low) to right (high) across `canvas`: the legend of the attention map. */
export function drawColorBar(canvas) {
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(canvas.width, canvas.height);
  for (let x = 0; x < canvas.width; x += 1) {
    const color = heatColor(canvas.width > 1 ? x / (canvas.width - 1) : 0);
    for (let y = 0; y < canvas.height; y += 1) {
      const i = 4 * (y * canvas.width + x);
      pixels.data.set([color[0], color[1], color[2], 255], i);
    }
  }
  context.putImageData(pixels, 0, 0);
}
