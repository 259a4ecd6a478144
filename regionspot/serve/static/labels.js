/* Region labels on the RegionSpot canvas, placed so they do not pile up in crowded scenes.
 *
 * Regions are placed best first. A region gets its full tag ("name 0.87", coloured like its
 * box) at the first free place among: above its box, inside its top, below it, inside its
 * bottom (left-aligned, then right-aligned). Where none is free of the tags placed before it,
 * it gets a small number tag at a corner of its box instead; the page's region list shows the
 * region under that number (numbered boxes with a legend). Tags are drawn worst first, so the
 * best region's tag is on top. Pending (not yet recognised) boxes get number tags too.
 * An ES module: import {placeTags, drawTags, numberTag} from "./labels.js".
 */
import { css, contrastText, RIM } from "./draw.js";

function overlaps(a, b) {
  return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
}

function clamp(value, low, high) {
  return Math.max(low, Math.min(value, high));
}

/** Places [x0, y0, x1, y1] for a tagW x tagH tag around `box`, preferred first, all inside the canvas. */
function fullTagPlaces(box, tagW, tagH, width, height) {
  const lefts = [box[0], box[2] - tagW].map((left) => clamp(left, 0, Math.max(0, width - tagW)));
  const tops = [box[1] - tagH, box[1], box[3], box[3] - tagH];
  const places = [];
  lefts.forEach((left) => tops.forEach((top) => {
    if (top >= 0 && top + tagH <= height) places.push([left, top, left + tagW, top + tagH]);
  }));
  return places;
}

/** Places for a small number tag: the box's four corners, inside the box, clamped to the canvas. */
function numberTagPlaces(box, tagW, tagH, width, height) {
  const xs = [box[0], box[2] - tagW].map((x) => clamp(x, 0, Math.max(0, width - tagW)));
  const ys = [box[1], box[3] - tagH].map((y) => clamp(y, 0, Math.max(0, height - tagH)));
  return [[xs[0], ys[0]], [xs[1], ys[0]], [xs[0], ys[1]], [xs[1], ys[1]]]
    .map((corner) => [corner[0], corner[1], corner[0] + tagW, corner[1] + tagH]);
}

/**
 * Where each tag goes. items: [{box (canvas pixels), text, number, rgb}] best first; `font`
 * a canvas font whose size is fontPx. Returns [{rect, text, rgb, full}] in the same order:
 * `full` is true for the "name score" tag, false for a number tag.
 */
export function placeTags(context, items, fontPx, width, height) {
  context.save();
  context.font = fontPx + "px system-ui, sans-serif";
  const pad = Math.max(2, Math.round(fontPx * 0.25));
  const tagH = fontPx + 2 * pad;
  const placed = [];
  const result = items.map((item) => {
    const fullW = context.measureText(item.text).width + 2 * pad;
    const free = fullTagPlaces(item.box, fullW, tagH, width, height)
      .find((place) => !placed.some((other) => overlaps(place, other)));
    if (free) {
      placed.push(free);
      return { rect: free, text: item.text, rgb: item.rgb, full: true };
    }
    const text = String(item.number);
    const numberW = context.measureText(text).width + 2 * pad;
    const corners = numberTagPlaces(item.box, numberW, tagH, width, height);
    const corner = corners.find((place) => !placed.some((other) => overlaps(place, other))) || corners[0];
    placed.push(corner);
    return { rect: corner, text: text, rgb: item.rgb, full: false };
  });
  context.restore();
  return result;
}

/** Draw placed tags (placeTags' answer) worst first, so the best region's tag is on top. */
export function drawTags(context, tags, fontPx) {
  context.save();
  context.font = fontPx + "px system-ui, sans-serif";
  context.textBaseline = "top";
  const pad = Math.max(2, Math.round(fontPx * 0.25));
  for (let i = tags.length - 1; i >= 0; i -= 1) {
    const tag = tags[i];
    const [x0, y0, x1, y1] = tag.rect;
    context.fillStyle = css(tag.rgb);
    context.fillRect(x0, y0, x1 - x0, y1 - y0);
    context.strokeStyle = RIM;
    context.lineWidth = 1;
    context.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
    context.fillStyle = css(contrastText(tag.rgb));
    context.fillText(tag.text, x0 + pad, y0 + pad);
  }
  context.restore();
}

/** A number tag inside the top-left corner of a box (on a width x height canvas): pending boxes' numbers. */
export function numberTag(context, box, number, rgb, fontPx, width, height) {
  context.save();
  context.font = fontPx + "px system-ui, sans-serif";
  const pad = Math.max(2, Math.round(fontPx * 0.25));
  const tagW = context.measureText(String(number)).width + 2 * pad;
  context.restore();
  const place = numberTagPlaces(box, tagW, fontPx + 2 * pad, width, height)[0];
  drawTags(context, [{ rect: place, text: String(number), rgb: rgb }], fontPx);
}
