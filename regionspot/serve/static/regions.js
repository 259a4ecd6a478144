/* The regions shown on the RegionSpot page, whatever asked for them (boxes, clicks, Find):
 * decoding an answer's regions, their colours and numbers, the client-side filter (score
 * threshold and top-N) and which region lies under a point.
 * An ES module: import {fromAnswer, numberByScore, visibleRegions, regionAt} from "./regions.js".
 */
import { decodeMask } from "./rle.js";
import { prepareMask } from "./draw.js";

/**
 * The regions of an API answer -> page regions: each answer region plus `origin` ("boxes",
 * "mask", "click" or "find"), `shape` (prepareMask of its decoded mask, or null) and `color` (a
 * palette index not used by `kept`, the regions staying on the page, so colours stay put).
 * onMaskError(message) is told about masks that do not decode.
 */
export function fromAnswer(answerRegions, origin, kept, onMaskError) {
  const used = new Set(kept.map((region) => region.color));
  let next = 0;
  return answerRegions.map((region) => {
    while (used.has(next)) next += 1;
    used.add(next);
    let shape = null;
    try {
      shape = region.mask ? prepareMask(decodeMask(region.mask)) : null;
    } catch (err) {
      onMaskError("A mask could not be decoded: " + err.message);
    }
    return Object.assign({}, region, { origin: origin, shape: shape, color: next });
  });
}

/** Set each region's `number`: its rank by score, best first (1-based); ties keep list order. */
export function numberByScore(regions) {
  const order = regions.map((_, i) => i).sort((a, b) => regions[b].score - regions[a].score || a - b);
  order.forEach((index, rank) => { regions[index].number = rank + 1; });
  return regions;
}

/** Regions passing the filter, best first: score >= threshold, then at most topN of them. */
export function visibleRegions(regions, threshold, topN) {
  return regions.filter((region) => region.score >= threshold)
    .sort((a, b) => a.number - b.number)
    .slice(0, Math.max(0, topN));
}

/**
 * The region under image point [x, y] among `regions`, or null: the smallest one whose mask
 * holds the point, else the smallest whose box does (a mask hit wins over a bare box).
 */
export function regionAt(regions, point) {
  let best = null;
  let bestKey = Infinity;
  regions.forEach((region) => {
    const b = region.box;
    if (point[0] < b[0] || point[0] > b[2] || point[1] < b[1] || point[1] > b[3]) return;
    const mask = region.shape ? region.shape.mask : null;
    const x = Math.floor(point[0]);
    const y = Math.floor(point[1]);
    const inMask = Boolean(mask) && x < mask.width && y < mask.height && mask.data[y * mask.width + x] === 1;
    const area = region.shape ? region.shape.area : (b[2] - b[0]) * (b[3] - b[1]);
    const key = (inMask ? 0 : 1e12) + area;
    if (key < bestKey) {
      best = region;
      bestKey = key;
    }
  });
  return best;
}
