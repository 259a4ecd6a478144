/* RegionSpot page, the entry module: upload or drop an image; draw boxes (or ask for automatic
 * ones) and name them against a vocabulary; click an object to recognize it (Shift-click or the
 * Background point toggle marks background and re-asks); find every instance of typed names.
 * A picked mask image (a binary mask or a label image at the photo's size) names its regions too.
 * Every answer's regions are listed best first and drawn with masks and tags, filtered on the
 * client by a score threshold and a top-N slider; a region's top-k list and attention map show
 * when it is selected. Everything kept here is in image pixels.
 */
import { ImageSession } from "./api.js";
import { loadInfo } from "./info.js";
import { attachPointer } from "./pointer.js";
import { fromAnswer, numberByScore, visibleRegions, regionAt } from "./regions.js";
import { renderCanvas, MaskLayer } from "./view.js";
import { renderResults, renderBoxList, showDetails, titleDetails, hideDetails } from "./panels.js";
import { setupControls, filterValues, setRegionCount } from "./controls.js";
import { readMaskImage } from "./mask_upload.js";

const state = {
  session: null,    // ImageSession of the uploaded image
  image: null,      // HTMLImageElement of the upload
  boxes: [],        // boxes to recognize, [x0, y0, x1, y1] image pixels
  sent: new Set(),  // those recognized already (JSON text), not drawn as pending
  clicks: [],       // click groups [{points: [[x, y]], labels: [1 | 0], region}], the last one is refined
  regions: [],      // regions on the page (regions.js), from boxes, mask images, clicks and Find
  selected: null,   // the region shown in #details
  drag: null,       // the box being dragged, or null
  busy: false,
  info: { limits: {}, attention: false },
};
const masks = new MaskLayer();
const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const MESSAGE_LINE_PX = 36;  // one line of #notice or #error with its padding and margin
let stageWidth = 0;  // the stage's width at the last drawing

// --------------------------------------------------------------------------- messages
function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  refit();
}

function showNotice(message) {
  $("notice").textContent = message;
  $("notice").hidden = !message;
  refit();
}

/** A message line grows the sticky action bar: refit the photo below it, so the bar never hides its top. */
function refit() {
  if (state.image) draw(visible());
}

/**
 * CSS pixels of the window kept for the sticky action bar: its height with the messages shown,
 * at least room for one message line (so a one-line notice does not shrink the photo), plus margins.
 */
function actionBarReserve() {
  const bar = $("actionbar");
  return Math.max(bar.offsetHeight, bar.querySelector(".row").offsetHeight + MESSAGE_LINE_PX) + 40;
}

/** A new action starts: earlier errors and notices are stale. */
function clearMessages() {
  $("error").hidden = true;
  $("error").textContent = "";
  showNotice("");
}

function setBusy(text) {
  state.busy = Boolean(text);
  $("busy").hidden = !state.busy;
  $("busy-text").textContent = text || "";
  document.body.setAttribute("aria-busy", state.busy ? "true" : "false");
  ["recognize", "auto-boxes", "file", "mask-file", "find"].forEach((id) => { $(id).disabled = state.busy; });
}

/** Run one request with the busy indicator on; its failure goes to #error (and onFail()). */
async function withBusy(text, what, task, onFail) {
  if (!state.session) return showError("Choose or drop an image first.");
  setBusy(text);
  try {
    await task();
  } catch (err) {
    if (onFail) onFail();
    showError(what + " failed: " + err.message);
  } finally {
    setBusy("");
    update();
  }
}

// --------------------------------------------------------------------------- drawing
function visible() {
  const filter = filterValues();
  return visibleRegions(state.regions, filter.threshold, filter.topN);
}

/** Redraw the canvas and the lists from the state. */
function update() {
  const shown = visible();
  if (state.selected && !shown.includes(state.selected)) state.selected = null;
  renderResults(shown, state.regions.length, state.selected, selectFromList);
  renderBoxList(state.boxes, deleteBox);
  if (state.selected) titleDetails(state.selected);
  else hideDetails();
  draw(shown);
}

/** Redraw the canvas alone (while a box is dragged, on resizing). */
function draw(shown) {
  if (!state.image) return;
  const width = state.image.naturalWidth;
  const height = state.image.naturalHeight;
  renderCanvas(canvas, $("stage"), {
    image: state.image, regions: shown, selected: state.selected, boxes: pendingBoxes(), clicks: state.clicks,
    drag: state.drag, labels: $("labels").checked, masks: $("masks").checked ? masks.get(shown, width, height) : null,
    reserve: actionBarReserve(),
  });
  stageWidth = $("stage").clientWidth;
}

/** The boxes not recognized yet, each with its number in the box list. */
function pendingBoxes() {
  return state.boxes.map((box, index) => ({ box: box, number: index + 1 }))
    .filter((entry) => !state.sent.has(JSON.stringify(entry.box)));
}

function selectRegion(region) {
  state.selected = region;
  showDetails(region, state.image);
  update();
}

/** A click in the region list: select the region and bring its details (above the list) into view. */
function selectFromList(region) {
  selectRegion(region);
  $("details").scrollIntoView({ block: "nearest" });
}

/** Replace the regions of one origin (or of one click group) by an answer's regions. */
function setRegions(removed, answer, origin, keepColor) {
  const kept = state.regions.filter((region) => !removed(region));
  const added = fromAnswer(answer, origin, kept, showError);
  if (keepColor !== undefined && added.length === 1) added[0].color = keepColor;
  state.regions = numberByScore(kept.concat(added));
  setRegionCount(state.regions.length);
  if (state.selected && removed(state.selected)) state.selected = null;
  return added;
}

/** A whole-picture answer (Recognize boxes, Find) replaces every region shown, and the clicks. */
function replaceAll(answer, origin) {
  state.clicks = [];
  setRegions(() => true, answer, origin);
}

function resetImage(image, session) {
  Object.assign(state, {
    image: image, session: session, boxes: [], sent: new Set(), clicks: [], regions: [], selected: null,
  });
  setRegionCount(0);
}

// --------------------------------------------------------------------------- image input
function loadFile(file) {
  clearMessages();
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) return showError(file.name + " is not an image (" + file.type + ").");
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    if (state.image) URL.revokeObjectURL(state.image.src);
    resetImage(image, new ImageSession(file));
    $("empty-hint").hidden = true;
    $("file-name").textContent = file.name + " · " + image.naturalWidth + " × " + image.naturalHeight + " px";
    update();
  };
  image.onerror = () => {
    URL.revokeObjectURL(url);
    showError("The browser cannot read " + file.name + " as an image.");
  };
  image.src = url;
}

function setupFileInputs() {
  const zone = $("dropzone");
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragging")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer ? event.dataTransfer.files : null;
    if (files && files.length) loadFile(files[0]);
  });
  $("file").addEventListener("change", (event) => loadFile(event.target.files[0]));
}

// --------------------------------------------------------------------------- boxes
function addBoxes(boxes) {
  const limit = state.info.limits.max_boxes || Infinity;
  const all = state.boxes.concat(boxes);
  if (all.length > limit) showError("At most " + limit + " boxes per request: the rest were dropped.");
  state.boxes = all.slice(0, limit);
}

function deleteBox(index) {
  state.boxes.splice(index, 1);
  update();
}

function vocabulary() {
  return $("builtin-vocabulary").value || $("vocabulary").value.trim();
}

function recognizeFields(extra) {
  return Object.assign({
    vocabulary: vocabulary(), topk: $("topk").value || "5", masks: "true",
    attention: state.info.attention ? "true" : "false",
  }, extra);
}

function proposeBoxes() {
  clearMessages();
  return withBusy("Finding regions…", "Auto boxes", async () => {
    const limit = state.info.limits.max_boxes;
    const body = await state.session.post("v1/propose", limit ? { max_boxes: String(limit) } : {});
    state.boxes = [];
    addBoxes(body.boxes.map((box) => box.map(Math.round)));
    if (!body.boxes.length) showError("No regions were found automatically: draw boxes instead.");
  });
}

function recognizeBoxes() {
  clearMessages();
  if (state.session && !state.boxes.length) return showError("Draw at least one box on the image (or use Auto boxes).");
  if (state.session && !vocabulary()) return showError("Type some names (separated by commas or new lines) or pick a built-in vocabulary.");
  const count = state.boxes.length;
  return withBusy("Recognizing " + count + (count === 1 ? " region…" : " regions…"), "Recognition", async () => {
    const body = await state.session.post("v1/recognize", recognizeFields({ boxes: JSON.stringify(state.boxes) }));
    replaceAll(body.regions, "boxes");
    state.sent = new Set(state.boxes.map((box) => JSON.stringify(box)));
  });
}

/** A picked mask image: its regions (one per non-black colour) are recognized and replace those shown. */
async function recognizeMasks(file) {
  clearMessages();
  if (!file) return;
  if (!state.session) return showError("Choose or drop a photo first, then pick a mask image at its size.");
  if (!vocabulary()) {
    return showError("Type some names (separated by commas or new lines) or pick a built-in vocabulary, " +
      "then pick the mask image.");
  }
  const image = state.image;
  let found;
  try {
    found = await readMaskImage(file, image.naturalWidth, image.naturalHeight, state.info.limits.max_boxes);
  } catch (err) {
    return showError(err.message);
  }
  if (image !== state.image) return;  // another photo was loaded meanwhile
  const count = found.masks.length;
  return withBusy("Recognizing " + count + (count === 1 ? " region" : " regions") + " of " + file.name + "…",
    "Recognition of the mask image", async () => {
      const body = await state.session.post("v1/recognize", recognizeFields({ region_masks: JSON.stringify(found.masks) }));
      replaceAll(body.regions, "mask");
    });
}

// --------------------------------------------------------------------------- clicks
/** A click or tap at an image point: inspect, recognize a new object, or add a background point. */
function onClick(point, how) {
  clearMessages();
  const background = how.shift || $("negative").getAttribute("aria-pressed") === "true";
  if (!background && $("mode-inspect").checked) return inspectAt(point);
  if (state.busy) return showNotice("Wait for the current request to finish.");
  if (!vocabulary()) return showError("Type some names (separated by commas or new lines) or pick a built-in vocabulary, then click.");
  // SAM takes sub-pixel clicks (as the Python API and the CLI do); a click must lie inside [0, W) x [0, H)
  const inside = (value, size) => Math.min(Math.max(Math.round(value * 100) / 100, 0), size - 0.01);
  const xy = [inside(point[0], state.image.naturalWidth), inside(point[1], state.image.naturalHeight)];
  if (background) {
    const group = state.clicks[state.clicks.length - 1];
    if (!group) return showError("Click an object first: a background point refines the last clicked object.");
    group.points.push(xy);
    group.labels.push(0);
    return askClick(group, () => { group.points.pop(); group.labels.pop(); });
  }
  const group = { points: [xy], labels: [1], region: null };
  state.clicks.push(group);
  return askClick(group, () => state.clicks.splice(state.clicks.indexOf(group), 1));
}

function inspectAt(point) {
  const region = regionAt(visible(), point);
  if (region) selectRegion(region);
  else showNotice("No region there: recognize something first, or set Click: Recognize.");
}

/** POST the points of one click group; its region replaces the group's earlier one. */
function askClick(group, undo) {
  update();
  const fields = recognizeFields({ points: JSON.stringify([group.points]), point_labels: JSON.stringify([group.labels]) });
  return withBusy("Recognizing the clicked object…", "Recognition", async () => {
    const body = await state.session.post("v1/recognize", fields);
    const old = group.region;
    const added = setRegions((region) => region === old, body.regions, "click", old ? old.color : undefined);
    group.region = added[0] || null;
    if (!group.region) return showNotice("No region at that point.");
    selectRegion(group.region);
    showNotice("Clicked object: region " + group.region.number + ", " + group.region.label + " " +
      group.region.score.toFixed(2) + (group.labels.length > 1 ? " (" + group.labels.length + " points)" : "") +
      ". Its top-k list and attention map are under the picture.");
  }, undo);
}

// --------------------------------------------------------------------------- find
function find(event) {
  if (event) event.preventDefault();
  clearMessages();
  const queries = $("find-text").value.trim();
  if (state.session && !queries) return showError("Type the names to find (separated by commas).");
  const fields = { queries: queries, masks: "true" };
  if ($("find-threshold").value.trim() !== "") fields.threshold = $("find-threshold").value.trim();
  return withBusy("Finding " + queries + "…", "Find", async () => {
    const body = await state.session.post("v1/find", fields);
    replaceAll(body.regions, "find");
    if (body.not_returned) {
      showNotice(body.not_returned + " more passed the score but are not shown: the server returns at most " +
        body.regions.length + " (raise Min. score to see the best of fewer).");
    }
    if (!body.regions.length) {
      showNotice("Nothing found for “" + queries + "”" + (fields.threshold ? " at score " + fields.threshold : "") +
        ". Try a lower Min. score or other names.");
    }
  });
}

// --------------------------------------------------------------------------- start
/** Client x, y -> [x, y] image pixels clamped to the image, or null with no image shown. */
function toImage(clientX, clientY) {
  if (!state.image) return null;
  const rect = canvas.getBoundingClientRect();
  const width = state.image.naturalWidth;
  const height = state.image.naturalHeight;
  const x = (clientX - rect.left) * width / rect.width;
  const y = (clientY - rect.top) * height / rect.height;
  return [Math.min(Math.max(x, 0), width), Math.min(Math.max(y, 0), height)];  // box corners may reach W, H
}

function orderedBox(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

function start() {
  setupFileInputs();
  attachPointer(canvas, {
    toImage: toImage,
    click: onClick,
    dragMove: (from, to) => {
      state.drag = from ? orderedBox(from, to) : null;
      draw(visible());
    },
    dragEnd: (from, to) => {
      clearMessages();
      const box = orderedBox(from, to).map(Math.round);
      if (box[2] > box[0] && box[3] > box[1]) addBoxes([box]);
      update();
    },
  });
  $("recognize").addEventListener("click", recognizeBoxes);
  $("auto-boxes").addEventListener("click", proposeBoxes);
  $("mask-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";  // picking the same file again is a change too
    recognizeMasks(file);
  });
  $("find-form").addEventListener("submit", find);
  $("clear-boxes").addEventListener("click", () => {
    clearMessages();
    if (state.image) resetImage(state.image, state.session);
    update();
  });
  setupControls(update);
  window.addEventListener("resize", () => draw(visible()));
  // the panel can change width without the window doing so (a scroll bar, the layout): redraw then
  new ResizeObserver(() => requestAnimationFrame(() => {
    if (Math.abs($("stage").clientWidth - stageWidth) > 1) draw(visible());
  })).observe($("stage"));
  update();
  loadInfo(showError).then((info) => { state.info = info; });
}

start();
