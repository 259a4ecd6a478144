/* The display controls of the RegionSpot page, all client-side (no request): the score
 * threshold and top-N sliders that filter the regions drawn and listed, the Masks and Labels
 * toggles, the vocabulary fields and the Background point toggle for touch screens.
 * An ES module: import {setupControls, filterValues, setRegionCount} from "./controls.js".
 */

const $ = (id) => document.getElementById(id);

/** The filter the sliders set: {threshold (minimum score), topN (at most this many regions)}. */
export function filterValues() {
  const slider = $("top-n");
  const showAll = Number(slider.value) >= Number(slider.max);
  return { threshold: Number($("score-threshold").value), topN: showAll ? Infinity : Number(slider.value) };
}

function showFilterValues() {
  $("score-threshold-value").textContent = Number($("score-threshold").value).toFixed(2);
  const slider = $("top-n");
  $("top-n-value").textContent = Number(slider.value) >= Number(slider.max) ? "all (" + slider.max + ")" : slider.value;
}

/**
 * The number of regions on the page changed: the top-N slider spans 1..count; it keeps showing
 * all when it did, else keeps its value (at most count).
 */
export function setRegionCount(count) {
  const slider = $("top-n");
  const showedAll = Number(slider.value) >= Number(slider.max);
  slider.max = String(Math.max(1, count));
  slider.value = String(showedAll ? slider.max : Math.min(Number(slider.value), Math.max(1, count)));
  slider.disabled = count === 0;
  showFilterValues();
}

/** Wire the controls; onChange() redraws. */
export function setupControls(onChange) {
  ["score-threshold", "top-n"].forEach((id) => $(id).addEventListener("input", () => {
    showFilterValues();
    onChange();
  }));
  ["masks", "labels"].forEach((id) => $(id).addEventListener("change", onChange));
  $("builtin-vocabulary").addEventListener("change", (event) => {
    $("vocabulary").disabled = Boolean(event.target.value);
  });
  $("negative").addEventListener("click", () => {
    const on = $("negative").getAttribute("aria-pressed") !== "true";
    $("negative").setAttribute("aria-pressed", on ? "true" : "false");
    $("negative-state").textContent = on ? "on" : "off";
  });
  setRegionCount(0);
}
