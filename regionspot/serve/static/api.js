/* HTTP side of the RegionSpot page (routes of the regionspot HTTP API, relative to the page so
 * the app also works behind a path prefix). Exposed as window.RegionSpotApi.
 */
(function () {
  "use strict";

  /**
   * fetch + JSON. A non-2xx answer throws an Error carrying the API's message
   * ({"error": {"type", "message"}}) and .status / .type; a network failure throws too.
   */
  async function callApi(path, options) {
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
  function ImageSession(file) {
    this.file = file;
    this.imageId = null;
  }

  ImageSession.prototype.post = async function (path, fields) {
    const session = this;
    const send = function (useId) {
      const form = new FormData();
      if (useId) form.append("image_id", session.imageId);
      else form.append("image", session.file, session.file.name);
      Object.keys(fields).forEach(function (key) { form.append(key, fields[key]); });
      return callApi(path, { method: "POST", body: form });
    };
    if (session.imageId) {
      try {
        return await send(true);
      } catch (err) {
        if (err.status !== 404) throw err;
        session.imageId = null;
      }
    }
    const body = await send(false);
    session.imageId = body.image_id || null;
    return body;
  };

  window.RegionSpotApi = { callApi: callApi, ImageSession: ImageSession };
})();
