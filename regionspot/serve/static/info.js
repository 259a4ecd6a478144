/* The page header of RegionSpot: what the server runs (GET /v1/info): backbones, which method
 * answers, whether the head is trained, the built-in vocabularies and the limits.
 * An ES module: import {loadInfo} from "./info.js".
 */
import { callApi } from "./api.js";

const $ = (id) => document.getElementById(id);

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

function addVocabularies(vocabularies) {
  const select = $("builtin-vocabulary");
  Object.keys(vocabularies || {}).forEach((key) => {
    const option = document.createElement("option");
    option.value = key;
    option.textContent = key + " (" + vocabularies[key] + " names)";
    select.appendChild(option);
  });
}

/**
 * Fill the header from GET /v1/info; returns {limits, attention (whether the model has
 * cross-attention maps)}. A failure is shown through onError(message) and answers defaults.
 */
export async function loadInfo(onError) {
  try {
    const info = await callApi("v1/info");
    const parts = info.backbones || {};
    $("info").textContent = "regionspot " + info.version + " · SAM: " + describePart(parts.sam) +
      " · CLIP vision: " + describePart(parts.clip_vision) + " · text: " + describePart(parts.text);
    $("info").title = JSON.stringify(parts, null, 1);
    $("method-note").textContent = methodText(info);
    $("method-note").hidden = false;
    $("untrained-note").hidden = !(info.method === "regionspot" && info.trained === false);
    addVocabularies(info.vocabularies);
    const limits = info.limits || {};
    if (limits.max_topk) $("topk").max = String(limits.max_topk);
    return { limits: limits, attention: info.attention !== false };
  } catch (err) {
    $("info").textContent = "Model information unavailable.";
    onError("Could not load the model information: " + err.message);
    return { limits: {}, attention: false };
  }
}
