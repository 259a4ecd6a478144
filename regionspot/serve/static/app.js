/* RegionSpot page: upload or drop an image, draw boxes (or ask for automatic ones), name them
 * against a vocabulary through the HTTP API, show masks and labels, and each region's top-k
 * list and cross-attention map. Boxes are kept in image pixels (xyxy); the canvas shows the
 * image scaled to fit. Needs rle.js, draw.js, api.js and panels.js loaded first.
 */
(function () {
  "use strict";

  const Draw = window.RegionSpotDraw;
  const Rle = window.RegionSpotRle;
  const Api = window.RegionSpotApi;
  const Panels = window.RegionSpotPanels;
  const MASK_ALPHA = 0.45;
  const CLICK_SLOP = 4;  // a mouse drag shorter than this (CSS pixels) is a click
  const PENDING = [255, 255, 255];  // colour of boxes not yet recognized

  const state = {
    session: null,   // Api.ImageSession of the uploaded image
    image: null,     // HTMLImageElement of the upload
    boxes: [],       // boxes to recognize, [x0, y0, x1, y1] in image pixels
    regions: [],     // regions of the last answer, each with .maskBits (rle.js) or null
    overlay: null,   // canvas at image resolution with the masks painted
    selected: -1,    // index of the region shown in #details
    attention: true, // whether the model has cross-attention maps to show (GET /v1/info)
    drag: null,      // {start, now: [x, y] image pixels, screen: [x, y]} while the mouse is down
    limits: {},
  };

  const $ = function (id) { return document.getElementById(id); };
  const canvas = $("canvas");

  // ------------------------------------------------------------------ messages and busy state
  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function setBusy(text) {
    const busy = Boolean(text);
    $("busy").hidden = !busy;
    $("busy-text").textContent = text || "";
    document.body.setAttribute("aria-busy", busy ? "true" : "false");
    ["recognize", "auto-boxes", "file"].forEach(function (id) { $(id).disabled = busy; });
  }

  // ------------------------------------------------------------------ model information
  function describePart(part) {
    if (!part) return "none";
    const path = String(part.name || part.name_or_path || "");
    const short = path.split(/[\\/]/).filter(Boolean).pop() || "";
    return [part.family, short].filter(Boolean).join(" ") || part.kind || "?";
  }

  function methodText(info) {
    if (info.method && info.method !== "regionspot") {
      return "Answering: zero-shot CLIP (" + info.method + ") on each region's crop, no trained head. " +
        "Scores are a softmax over the vocabulary.";
    }
    return "Answering: " + (info.model || "a RegionSpot head") + ". Scores: " + (info.score_kind || "?") + ".";
  }

  async function loadInfo() {
    try {
      const info = await Api.callApi("v1/info");
      state.limits = info.limits || {};
      const parts = info.backbones || {};
      $("info").textContent = "regionspot " + info.version + " · SAM: " + describePart(parts.sam) +
        " · CLIP vision: " + describePart(parts.clip_vision) + " · text: " + describePart(parts.text);
      $("info").title = JSON.stringify(parts, null, 1);
      state.attention = info.attention !== false;
      $("method-note").textContent = methodText(info);
      $("method-note").hidden = false;
      $("untrained-note").hidden = !(info.method === "regionspot" && info.trained === false);
      const select = $("builtin-vocabulary");
      Object.keys(info.vocabularies || {}).forEach(function (key) {
        const option = document.createElement("option");
        option.value = key;
        option.textContent = key + " (" + info.vocabularies[key] + " names)";
        select.appendChild(option);
      });
      if (state.limits.max_topk) $("topk").max = String(state.limits.max_topk);
    } catch (err) {
      $("info").textContent = "Model information unavailable.";
      showError("Could not load the model information: " + err.message);
    }
  }

  // ------------------------------------------------------------------ image input
  function loadFile(file) {
    clearError();
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) return showError(file.name + " is not an image (" + file.type + ").");
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.onload = function () {
      if (state.image) URL.revokeObjectURL(state.image.src);
      Object.assign(state, { session: new Api.ImageSession(file), image: image, boxes: [] });
      setRegions([]);
      renderBoxList();
      $("empty-hint").hidden = true;
      $("file-name").textContent = file.name + " · " + image.naturalWidth + " × " + image.naturalHeight + " px";
      render();
    };
    image.onerror = function () {
      URL.revokeObjectURL(url);
      showError("The browser cannot read " + file.name + " as an image.");
    };
    image.src = url;
  }

  function setupFileInputs() {
    const zone = $("dropzone");
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      const files = event.dataTransfer ? event.dataTransfer.files : null;
      if (files && files.length) loadFile(files[0]);
    });
    $("file").addEventListener("change", function (event) { loadFile(event.target.files[0]); });
  }

  // ------------------------------------------------------------------ canvas
  /** Size the canvas to the image scaled to fit; returns canvas pixels per image pixel. */
  function fitCanvas() {
    const width = state.image.naturalWidth;
    const height = state.image.naturalHeight;
    const maxWidth = Math.max(200, $("stage").clientWidth);
    const maxHeight = Math.max(200, window.innerHeight * 0.75);
    const scale = Math.min(maxWidth / width, maxHeight / height, 1);
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    return canvas.width / width;
  }

  function render() {
    if (!state.image) return;
    const scale = fitCanvas();
    const context = canvas.getContext("2d");
    const scaled = function (box) { return box.map(function (v) { return v * scale; }); };
    context.drawImage(state.image, 0, 0, canvas.width, canvas.height);
    if (state.overlay && $("masks").checked) context.drawImage(state.overlay, 0, 0, canvas.width, canvas.height);
    state.boxes.forEach(function (box) { Draw.strokeBox(context, scaled(box), PENDING, 2, true); });
    const order = byScore();
    order.forEach(function (i) {
      Draw.strokeBox(context, scaled(state.regions[i].box), Draw.regionColor(i), i === state.selected ? 4 : 2, false);
    });
    Draw.drawTags(context, order.map(function (i) {
      return { box: scaled(state.regions[i].box), text: Panels.tagText(state.regions[i]), rgb: Draw.regionColor(i) };
    }), 13);
    if (state.drag) Draw.strokeBox(context, scaled(orderedBox(state.drag.start, state.drag.now)), PENDING, 2, true);
  }

  /** Region indices in increasing score order (the best is drawn last, on top). */
  function byScore() {
    return state.regions.map(function (_, i) { return i; })
      .sort(function (a, b) { return state.regions[a].score - state.regions[b].score; });
  }

  function orderedBox(a, b) {
    return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  }

  /** Mouse event -> [x, y] in image pixels, clamped to the image. */
  function imagePoint(event) {
    const rect = canvas.getBoundingClientRect();
    const width = state.image.naturalWidth;
    const height = state.image.naturalHeight;
    const x = (event.clientX - rect.left) * width / rect.width;
    const y = (event.clientY - rect.top) * height / rect.height;
    return [Math.min(Math.max(x, 0), width), Math.min(Math.max(y, 0), height)];
  }

  function setupCanvasMouse() {
    canvas.addEventListener("mousedown", function (event) {
      if (!state.image || event.button !== 0) return;
      event.preventDefault();
      const point = imagePoint(event);
      state.drag = { start: point, now: point, screen: [event.clientX, event.clientY] };
    });
    window.addEventListener("mousemove", function (event) {
      if (!state.drag) return;
      state.drag.now = imagePoint(event);
      render();
    });
    window.addEventListener("mouseup", function (event) {
      const drag = state.drag;
      if (!drag) return;
      state.drag = null;
      if (Math.hypot(event.clientX - drag.screen[0], event.clientY - drag.screen[1]) < CLICK_SLOP) {
        selectAt(drag.start);
      } else {
        const box = orderedBox(drag.start, imagePoint(event)).map(Math.round);
        if (box[2] > box[0] && box[3] > box[1]) addBoxes([box]);
      }
      render();
    });
  }

  /** A click at an image point selects the smallest region whose mask (else box) holds it. */
  function selectAt(point) {
    let best = -1;
    let bestArea = Infinity;
    const x = Math.min(Math.floor(point[0]), state.image.naturalWidth - 1);
    const y = Math.min(Math.floor(point[1]), state.image.naturalHeight - 1);
    state.regions.forEach(function (region, index) {
      const b = region.box;
      if (point[0] < b[0] || point[0] > b[2] || point[1] < b[1] || point[1] > b[3]) return;
      const mask = region.maskBits;
      const inMask = Boolean(mask) && mask.data[y * mask.width + x] === 1;
      const area = (b[2] - b[0]) * (b[3] - b[1]) * (inMask ? 0.5 : 1);  // a mask hit wins over a bare box
      if (area < bestArea) {
        best = index;
        bestArea = area;
      }
    });
    if (best >= 0) selectRegion(best);
  }

  // ------------------------------------------------------------------ boxes
  function addBoxes(boxes) {
    const limit = state.limits.max_boxes || Infinity;
    const all = state.boxes.concat(boxes);
    if (all.length > limit) showError("At most " + limit + " boxes per request: the rest were dropped.");
    state.boxes = all.slice(0, limit);
    renderBoxList();
  }

  function renderBoxList() {
    const list = $("box-list");
    list.textContent = "";
    state.boxes.forEach(function (box, index) {
      const item = document.createElement("li");
      item.textContent = "[" + box.join(", ") + "] ";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", "Delete box " + (index + 1));
      remove.addEventListener("click", function () {
        state.boxes.splice(index, 1);
        renderBoxList();
        render();
      });
      item.appendChild(remove);
      list.appendChild(item);
    });
    $("box-count").textContent = state.boxes.length + (state.boxes.length === 1 ? " box" : " boxes");
  }

  // ------------------------------------------------------------------ requests
  /** Run one request with the busy indicator on; its failure goes to #error. */
  async function withBusy(text, what, task) {
    clearError();
    if (!state.session) return showError("Choose or drop an image first.");
    setBusy(text);
    try {
      await task();
    } catch (err) {
      showError(what + " failed: " + err.message);
    } finally {
      setBusy("");
    }
  }

  function proposeBoxes() {
    return withBusy("Finding regions…", "Auto boxes", async function () {
      const fields = state.limits.max_boxes ? { max_boxes: String(state.limits.max_boxes) } : {};
      const body = await state.session.post("v1/propose", fields);
      state.boxes = [];
      addBoxes(body.boxes.map(function (box) { return box.map(Math.round); }));
      if (!body.boxes.length) showError("No regions were found automatically: draw boxes instead.");
      render();
    });
  }

  function recognize() {
    const vocabulary = $("builtin-vocabulary").value || $("vocabulary").value.trim();
    if (state.session && !state.boxes.length) return showError("Draw at least one box on the image (or use Auto boxes).");
    if (state.session && !vocabulary) return showError("Type some names (separated by commas or new lines) or pick a built-in vocabulary.");
    const count = state.boxes.length;
    return withBusy("Recognizing " + count + (count === 1 ? " region…" : " regions…"), "Recognition", async function () {
      const body = await state.session.post("v1/recognize", {
        boxes: JSON.stringify(state.boxes), vocabulary: vocabulary, topk: $("topk").value || "5",
        masks: $("masks").checked ? "true" : "false", attention: state.attention ? "true" : "false",
      });
      setRegions(body.regions);
      render();
    });
  }

  function setRegions(regions) {
    const width = state.image ? state.image.naturalWidth : 0;
    const height = state.image ? state.image.naturalHeight : 0;
    state.regions = regions.map(function (region) {
      let maskBits = null;
      try {
        maskBits = region.mask ? Rle.decodeMask(region.mask) : null;
      } catch (err) {
        showError("A mask could not be decoded: " + err.message);
      }
      return Object.assign({}, region, { maskBits: maskBits });
    });
    const masks = state.regions.map(function (region) { return region.maskBits; });
    state.overlay = masks.some(Boolean) ? Draw.maskOverlay(masks, byScore(), width, height, MASK_ALPHA) : null;
    state.selected = -1;
    Panels.renderResults(state.regions, state.selected, selectRegion);
  }

  function selectRegion(index) {
    state.selected = index;
    Panels.renderResults(state.regions, index, selectRegion);
    Panels.showDetails(state.regions[index], index, state.image);
    render();
  }

  // ------------------------------------------------------------------ start
  function start() {
    setupFileInputs();
    setupCanvasMouse();
    $("recognize").addEventListener("click", recognize);
    $("auto-boxes").addEventListener("click", proposeBoxes);
    $("clear-boxes").addEventListener("click", function () {
      state.boxes = [];
      setRegions([]);
      renderBoxList();
      render();
    });
    $("masks").addEventListener("change", render);
    $("builtin-vocabulary").addEventListener("change", function (event) {
      $("vocabulary").disabled = Boolean(event.target.value);
    });
    window.addEventListener("resize", render);
    renderBoxList();
    loadInfo();
  }

  start();
})();
