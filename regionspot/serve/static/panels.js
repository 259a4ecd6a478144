/* Result panels of the RegionSpot page: the list of regions (#results, best score first, each
 * with the number that tags it on the picture), the pending boxes (#box-list) and the details
 * of one region (#details: its top-k list and its cross-attention map, the paper's Figure 4,
 * with a colour bar of the heat ramp).
 * An ES module: import {renderResults, renderBoxList, showDetails, titleDetails, hideDetails} from "./panels.js".
 */
import { css, regionColor, strokeBox, drawHeat, drawColorBar } from "./draw.js";
import { placeTags, drawTags } from "./labels.js";
import { tagText } from "./view.js";

const HEAT_ALPHA = 0.5;
const ATTENTION_SIDE = 480;  // longer side of the attention canvas, CSS pixels
const ORIGIN_WORDS = { boxes: "box", mask: "mask", click: "click", find: "find" };

const $ = (id) => document.getElementById(id);

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

/**
 * One button per visible region, best first: number, colour swatch, label, score (and what
 * asked for it); onSelect(region) on click. `total` is the number of regions before filtering.
 */
export function renderResults(regions, total, selected, onSelect) {
  const list = $("results");
  list.textContent = "";
  regions.forEach((region) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "region" + (region === selected ? " selected" : "");
    button.dataset.number = String(region.number);
    const swatch = span("swatch", "");
    swatch.style.background = css(regionColor(region.color));
    button.append(span("number", String(region.number)), swatch, span("label", region.label),
      span("score", region.score.toFixed(2)), span("origin", ORIGIN_WORDS[region.origin] || ""));
    button.setAttribute("aria-pressed", region === selected ? "true" : "false");
    button.setAttribute("aria-label", "Region " + region.number + ": " + region.label + ", score " +
      region.score.toFixed(2) + ". Show its top-k list and attention map.");
    button.addEventListener("click", () => onSelect(region));
    item.appendChild(button);
    list.appendChild(item);
  });
  $("results-heading").hidden = total === 0;
  $("results-count").textContent = total === 0 ? "" : regions.length === total
    ? "(" + total + ", best score first)" : "(" + regions.length + " of " + total + " shown, best score first)";
}

/** The pending boxes, numbered as on the picture, each with a Delete button (onDelete(index)). */
export function renderBoxList(boxes, onDelete) {
  const list = $("box-list");
  list.textContent = "";
  boxes.forEach((box, index) => {
    const item = document.createElement("li");
    item.textContent = "[" + box.join(", ") + "] ";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "small";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", "Delete box " + (index + 1));
    remove.addEventListener("click", () => onDelete(index));
    item.appendChild(remove);
    list.appendChild(item);
  });
  $("box-count").textContent = boxes.length + (boxes.length === 1 ? " box" : " boxes");
}

export function hideDetails() {
  $("details").hidden = true;
}

/** The title of #details, again when the regions were renumbered. */
export function titleDetails(region) {
  $("details-title").textContent = "Region " + region.number + ": " + region.label;
}

/** Fill #details for `region`: its top-k names with score bars and its attention map. */
export function showDetails(region, image) {
  titleDetails(region);
  const list = $("topk-list");
  list.textContent = "";
  region.topk.forEach((entry) => {
    const item = document.createElement("li");
    const bar = document.createElement("meter");
    bar.min = 0;
    bar.max = 1;
    bar.value = entry.score;
    bar.setAttribute("aria-label", entry.label + " score");
    item.append(span("label", entry.label), bar, span("score", entry.score.toFixed(3)));
    list.appendChild(item);
  });
  drawAttentionPanel(region, image);
  $("details").hidden = false;
}

function drawAttentionPanel(region, image) {
  const panel = $("attention");
  const note = $("attention-note");
  const legend = $("heat-legend");
  if (!region.attention || !region.attention.length) {
    panel.hidden = true;
    legend.hidden = true;
    note.textContent = "No attention map: this model has no cross-attention (zero-shot CLIP, or a head " +
      "without the CLIP vision tower), or the region was found before the map was asked for.";
    return;
  }
  const scale = Math.min(ATTENTION_SIDE / Math.max(image.naturalWidth, image.naturalHeight), 1);
  panel.width = Math.max(1, Math.round(image.naturalWidth * scale));
  panel.height = Math.max(1, Math.round(image.naturalHeight * scale));
  const context = drawHeat(panel, image, region.attention, HEAT_ALPHA);
  const box = region.box.map((v) => v * scale);
  const rgb = regionColor(region.color);
  strokeBox(context, box, rgb, 2, false);
  const tag = { box: box, text: tagText(region), number: region.number, rgb: rgb };
  drawTags(context, placeTags(context, [tag], 13, panel.width, panel.height), 13);
  panel.hidden = false;
  drawColorBar($("heat-bar"));
  legend.hidden = false;
  const rows = region.attention.length;
  const cols = region.attention[0].length;
  note.textContent = "Cross-attention of this region over CLIP's " + rows + " × " + cols +
    " patch grid, scaled to its maximum: dark blue is low, then cyan, green, yellow, red; dark red is high.";
}
