/* COCO compressed run-length encoding (RLE) -> binary mask, for the RegionSpot page.
 *
 * A mask {size: [h, w], counts: "<string>"} lists run lengths of alternating 0s and 1s
 * (starting with 0s) over the pixels in column-major order (down the first column, then the
 * next). The string packs each run length as a little-endian sequence of 5-bit groups, one
 * character per group (char code - 48): bit 0x20 says "more groups follow", bit 0x10 of the
 * last group is the sign. From the fourth run on (index > 2) a value is stored as the
 * difference to the run two places back, so that value is added back.
 * An ES module: import {decodeCounts, decodeMask} from "./rle.js".
 */

/** "<counts string>" -> array of run lengths (numbers). Throws on a malformed string. */
export function decodeCounts(text) {
  if (typeof text !== "string") throw new Error("RLE counts must be a string");
  const counts = [];
  let position = 0;
  while (position < text.length) {
    let value = 0;
    let group = 0;
    let more = true;
    while (more) {
      if (position >= text.length) throw new Error("RLE string ends inside a number");
      const code = text.charCodeAt(position) - 48;
      if (code < 0 || code > 63) throw new Error("RLE string has a character outside its alphabet");
      value += (code & 0x1f) * Math.pow(32, group);
      more = (code & 0x20) !== 0;
      position += 1;
      group += 1;
      if (!more && (code & 0x10) !== 0) value -= Math.pow(32, group);  // sign-extend
    }
    if (counts.length > 2) value += counts[counts.length - 2];
    if (value < 0) throw new Error("RLE string decodes to a negative run length");
    counts.push(value);
  }
  return counts;
}

/**
 * {size: [h, w], counts} -> {height, width, data}: data is a Uint8Array of h*w in row-major
 * order (data[y * w + x] is 1 inside the mask, 0 outside).
 */
export function decodeMask(rle) {
  if (!rle || !Array.isArray(rle.size) || rle.size.length !== 2) throw new Error("RLE needs size [h, w]");
  const height = rle.size[0];
  const width = rle.size[1];
  const counts = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  const total = height * width;
  const data = new Uint8Array(total);
  let index = 0;
  for (let run = 0; run < counts.length; run += 1) {
    const end = index + counts[run];
    if (end > total) throw new Error("RLE runs are longer than the mask");
    if (run % 2 === 1) {
      for (let i = index; i < end; i += 1) {
        data[(i % height) * width + Math.floor(i / height)] = 1;  // column-major -> row-major
      }
    }
    index = end;
  }
  if (index !== total) throw new Error("RLE runs cover " + index + " of " + total + " pixels");
  return { height: height, width: width, data: data };
}
