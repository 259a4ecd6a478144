/* Regions given as a mask image, for the RegionSpot page: a picked PNG (or any image the browser
 * decodes) at the photo's size is either a binary mask (one region: its non-black pixels) or a
 * label image (each distinct non-black colour one region). Black and fully transparent pixels
 * belong to no region. Each region becomes an uncompressed COCO RLE {size: [h, w], counts: [run
 * lengths]}: runs of alternating 0s and 1s, starting with 0s, over the pixels in column-major
 * order (down the first column, then the next), summing to h * w, as POST /v1/recognize takes
 * them in `region_masks`.
 * An ES module: import {readMaskImage, regionsFromPixels} from "./mask_upload.js".
 */

/** File -> ImageBitmap of its pixels as stored (no colour management, alpha not premultiplied). */
async function decodeFile(file) {
  try {
    return await createImageBitmap(file, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;  // options this browser does not know: decode plainly
    return createImageBitmap(file);
  }
}

/**
 * RGBA pixels (row-major, 4 bytes a pixel, as getImageData gives them) of a width x height
 * image -> {colors: ["rgb(r, g, b)", ...], masks: [RLE, ...]}: one region per distinct colour
 * that is not black, in the order their first pixels are met reading the image (rows top to
 * bottom, each left to right); pixels with alpha 0 are ignored.
 */
export function regionsFromPixels(pixels, width, height) {
  const total = width * height;
  const ids = new Int32Array(total).fill(-1);
  const idOf = new Map();  // 0xRRGGBB -> region index
  const colors = [];
  for (let i = 0; i < total; i += 1) {
    const at = 4 * i;
    if (pixels[at + 3] === 0) continue;
    const key = (pixels[at] << 16) | (pixels[at + 1] << 8) | pixels[at + 2];
    if (key === 0) continue;
    let id = idOf.get(key);
    if (id === undefined) {
      id = colors.length;
      idOf.set(key, id);
      colors.push("rgb(" + pixels[at] + ", " + pixels[at + 1] + ", " + pixels[at + 2] + ")");
    }
    ids[i] = id;
  }
  // one column-major walk: a region's run ends where the pixel's region changes to or from it
  const counts = colors.map(() => []);
  const runStart = new Float64Array(colors.length);  // where each region's current run began
  let previous = -1;
  let index = 0;
  for (let x = 0; x < width; x += 1) {
    for (let y = 0; y < height; y += 1) {
      const id = ids[y * width + x];
      if (id !== previous) {
        if (previous >= 0) {  // a run of 1s of `previous` ends
          counts[previous].push(index - runStart[previous]);
          runStart[previous] = index;
        }
        if (id >= 0) {  // a run of 0s of `id` ends
          counts[id].push(index - runStart[id]);
          runStart[id] = index;
        }
        previous = id;
      }
      index += 1;
    }
  }
  counts.forEach((runs, id) => runs.push(total - runStart[id]));  // the last run, of 1s or 0s
  return { colors: colors, masks: counts.map((runs) => ({ size: [height, width], counts: runs })) };
}

/**
 * A picked mask image -> {colors, masks} as regionsFromPixels answers, for a photo of
 * width x height pixels. Throws an Error with a message for the page when the file is not an
 * image, is another size than the photo, has no non-black pixel or more than maxRegions regions
 * (no limit when maxRegions is not a number).
 */
export async function readMaskImage(file, width, height, maxRegions) {
  let bitmap;
  try {
    bitmap = await decodeFile(file);
  } catch (err) {
    throw new Error("The browser cannot read the mask file " + file.name + " as an image.");
  }
  try {
    if (bitmap.width !== width || bitmap.height !== height) {
      throw new Error("The mask image " + file.name + " is " + bitmap.width + " × " + bitmap.height +
        " px but the photo is " + width + " × " + height + " px: give a mask at the photo's size.");
    }
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const found = regionsFromPixels(context.getImageData(0, 0, width, height).data, width, height);
    if (!found.masks.length) {
      throw new Error("The mask image " + file.name + " has no region: every pixel is black or transparent. " +
        "Regions are its non-black pixels (one region per colour).");
    }
    if (typeof maxRegions === "number" && found.masks.length > maxRegions) {
      throw new Error("The mask image " + file.name + " has " + found.masks.length + " regions (distinct " +
        "non-black colours) but the server takes at most " + maxRegions + " per request (max_boxes).");
    }
    return found;
  } finally {
    if (bitmap.close) bitmap.close();
  }
}
