/* Result panels of the RegionSpot page: the list of recognized regions (#results) and the
 * details of one region (#details: its top-k list and its cross-attention map, the paper's
 * Figure 4). Exposed as window.RegionSpotPanels. Needs draw.js.
 */
(function () {
  "use strict";

  const Draw = window.RegionSpotDraw;
  const HEAT_ALPHA = 0.5;
  const ATTENTION_SIDE = 480;  // longer side of the attention canvas, CSS pixels

  const $ = function (id) { return document.getElementById(id); };

  function tagText(region) {
    return region.label + " " + region.score.toFixed(2);
  }

  function span(className, text) {
    const element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }

  /** One button per region (colour swatch, label, score); onSelect(index) on click. */
  function renderResults(regions, selected, onSelect) {
    const list = $("results");
    list.textContent = "";
    regions.forEach(function (region, index) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "region" + (index === selected ? " selected" : "");
      button.dataset.index = String(index);
      const swatch = span("swatch", "");
      swatch.style.background = Draw.css(Draw.regionColor(index));
      button.append(swatch, span("label", region.label), span("score", region.score.toFixed(2)));
      button.setAttribute("aria-pressed", index === selected ? "true" : "false");
      button.setAttribute("aria-label", "Region " + (index + 1) + ": " + region.label + ", score " +
        region.score.toFixed(2) + ". Show its top-k list and attention map.");
      button.addEventListener("click", function () { onSelect(index); });
      item.appendChild(button);
      list.appendChild(item);
    });
    $("results-heading").hidden = regions.length === 0;
    if (selected < 0) $("details").hidden = true;
  }

  /** Fill #details for region `index`: its top-k names with score bars and its attention map. */
  function showDetails(region, index, image) {
    $("details-title").textContent = "Region " + (index + 1) + ": " + region.label;
    const list = $("topk-list");
    list.textContent = "";
    region.topk.forEach(function (entry) {
      const item = document.createElement("li");
      const bar = document.createElement("meter");
      bar.min = 0;
      bar.max = 1;
      bar.value = entry.score;
      bar.setAttribute("aria-label", entry.label + " score");
      item.append(span("label", entry.label), bar, span("score", entry.score.toFixed(3)));
      list.appendChild(item);
    });
    drawAttentionPanel(region, index, image);
    $("details").hidden = false;
  }

  function drawAttentionPanel(region, index, image) {
    const panel = $("attention");
    const note = $("attention-note");
    if (!region.attention || !region.attention.length) {
      panel.hidden = true;
      note.textContent = "No attention map: this model has no cross-attention (zero-shot CLIP, or a head " +
        "without the CLIP vision tower).";
      return;
    }
    const scale = Math.min(ATTENTION_SIDE / Math.max(image.naturalWidth, image.naturalHeight), 1);
    panel.width = Math.max(1, Math.round(image.naturalWidth * scale));
    panel.height = Math.max(1, Math.round(image.naturalHeight * scale));
    Draw.drawAttention(panel, image, region.attention, region.box, scale, tagText(region),
      Draw.regionColor(index), HEAT_ALPHA);
    panel.hidden = false;
    const rows = region.attention.length;
    const cols = region.attention[0].length;
    note.textContent = "Cross-attention of this region over CLIP's " + rows + " × " + cols +
      " patch grid, scaled to its maximum (blue: low, red: high).";
  }

  window.RegionSpotPanels = { renderResults: renderResults, showDetails: showDetails, tagText: tagText };
})();
