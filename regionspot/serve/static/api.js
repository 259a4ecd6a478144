/* HTTP side of the RegionSpot page: the routes of the regionspot HTTP API, called relative to
 * the page so the app also works behind a path prefix.
 * An ES module: import {callApi, ImageSession} from "./api.js".
 */

/**
 * fetch + JSON. A non-2xx answer throws an Error carrying the API's message
 * ({"error": {"type", "message"}}) and .status / .type; a network failure throws too.
 */
export async function callApi(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("could not reach the server (" + err.message + ")");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.error ? body.error : null;
    const error = new Error(detail ? detail.message
      : "the server answered " + response.status + " " + response.statusText);
    error.status = response.status;
    error.type = detail ? detail.type : "http_" + response.status;
    throw error;
  }
  if (body === null) throw new Error("the server's answer to " + path + " is not JSON");
  return body;
}

/**
 * One uploaded image: the first request sends its bytes, later ones the image_id the server
 * returned (it keeps the image's embeddings, so nothing is encoded twice). When the server
 * has forgotten the id (404), the bytes are sent again once.
 */
export class ImageSession {
  constructor(file) {
    this.file = file;
    this.imageId = null;
  }

  /** POST multipart `fields` (strings) plus the image (bytes or image_id) to `path`. */
  async post(path, fields) {
    const send = (useId) => {
      const form = new FormData();
      if (useId) form.append("image_id", this.imageId);
      else form.append("image", this.file, this.file.name);
      Object.keys(fields).forEach((key) => form.append(key, fields[key]));
      return callApi(path, { method: "POST", body: form });
    };
    if (this.imageId) {
      try {
        return await send(true);
      } catch (err) {
        if (err.status !== 404) throw err;
        this.imageId = null;
      }
    }
    const body = await send(false);
    this.imageId = body.image_id || null;
    return body;
  }
}
