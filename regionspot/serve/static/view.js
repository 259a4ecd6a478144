/* The RegionSpot canvas: the photo scaled to fit the panel (width first, never overflowing),
 * with the visible regions' masks, boxes and tags, the pending boxes (dashed, numbered), the
 * clicked points (green on the object, red on the background) and the box being dragged.
 * Everything the page keeps is in image pixels; only this module knows the display scale.
 * An ES module: import {fitCanvas, renderCanvas, MaskLayer} from "./view.js".
 */
import { maskOverlay, regionColor, strokeBox, drawDot } from "./draw.js";
import { placeTags, drawTags, numberTag } from "./labels.js";

// mask fill opacity: 0.45 as viz for a few regions, lighter when many cover the photo
const MASK_ALPHA = 0.45;
const MIN_MASK_ALPHA = 0.22;
const maskAlpha = (count) => Math.max(MIN_MASK_ALPHA, MASK_ALPHA - 0.01 * Math.max(0, count - 8));
const FONT_PX = 13;
const DOT_RADIUS = 5;
const PENDING = [255, 255, 255];  // colour of boxes not yet recognized

/**
 * Size `canvas` to show an image of width x height across `stage` (scaled up or down to the
 * stage's width, unless it would then be taller than the window less `reserve` CSS pixels, kept
 * for the sticky action bar), sharp on high-DPI screens. Returns {scale: CSS pixels per image
 * pixel, width, height (CSS pixels)}.
 */
export function fitCanvas(canvas, stage, width, height, reserve) {
  const maxWidth = Math.max(100, stage.clientWidth);
  const maxHeight = Math.max(240, window.innerHeight - reserve);
  const scale = Math.min(maxWidth / width, maxHeight / height);
  const cssWidth = Math.max(1, Math.floor(width * scale));
  const cssHeight = Math.max(1, Math.floor(height * scale));
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  canvas.style.width = cssWidth + "px";  // the height follows from the aspect ratio (style.css)
  canvas.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
  return { scale: cssWidth / width, width: cssWidth, height: cssHeight };
}

/** The masks of the visible regions painted once at image resolution, redone only when they change. */
export class MaskLayer {
  constructor() {
    this.key = null;
    this.canvas = null;
  }

  /** The overlay of `regions` (large masks first, then worst to best score, so the best is on top). */
  get(regions, width, height) {
    const key = width + "x" + height + ":" + regions.map((r) => r.color + "/" + r.number).join(",");
    if (key === this.key) return this.canvas;
    const order = regions.filter((r) => r.shape)
      .sort((a, b) => (b.shape.large - a.shape.large) || (b.number - a.number));
    this.canvas = order.length ? maskOverlay(order.map((r) => ({ shape: r.shape, rgb: regionColor(r.color) })),
      width, height, maskAlpha(order.length)) : null;
    this.key = key;
    return this.canvas;
  }
}

/**
 * Draw the page's picture. view: {image, regions (visible, best first), selected (a region or
 * null), boxes (pending: [{box (image pixels), number}]), clicks ([{points, labels}]), drag (box or null),
 * masks (an overlay canvas or null), labels (show tags), reserve (CSS pixels of the window's
 * height kept free)}.
 */
export function renderCanvas(canvas, stage, view) {
  const width = view.image.naturalWidth;
  const height = view.image.naturalHeight;
  const fit = fitCanvas(canvas, stage, width, height, view.reserve);
  const context = canvas.getContext("2d");
  const scaled = (box) => box.map((v) => v * fit.scale);
  context.drawImage(view.image, 0, 0, fit.width, fit.height);
  if (view.masks) context.drawImage(view.masks, 0, 0, fit.width, fit.height);
  // the selected region comes first (its tag is placed first) and its box is drawn last, on top
  const ordered = view.selected ? [view.selected].concat(view.regions.filter((r) => r !== view.selected))
    : view.regions;
  for (let i = ordered.length - 1; i >= 0; i -= 1) {
    const region = ordered[i];
    strokeBox(context, scaled(region.box), regionColor(region.color), region === view.selected ? 4 : 2, false);
  }
  if (view.labels) {
    const items = ordered.map((region) => ({
      box: scaled(region.box), text: tagText(region), number: region.number, rgb: regionColor(region.color),
    }));
    drawTags(context, placeTags(context, items, FONT_PX, fit.width, fit.height), FONT_PX);
  }
  view.boxes.forEach((entry) => {
    strokeBox(context, scaled(entry.box), PENDING, 2, true);
    numberTag(context, scaled(entry.box), entry.number, PENDING, FONT_PX, fit.width, fit.height);
  });
  view.clicks.forEach((group) => group.points.forEach((point, i) => {
    drawDot(context, scaled(point), group.labels[i] === 1, DOT_RADIUS);
  }));
  if (view.drag) strokeBox(context, scaled(view.drag), PENDING, 2, true);
  return fit;
}

/** A region's tag on the picture and in the attention panel: "name 0.87". */
export function tagText(region) {
  return region.label + " " + region.score.toFixed(2);
}
