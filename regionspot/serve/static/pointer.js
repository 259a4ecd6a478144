/* Pointer input on the RegionSpot canvas, with Pointer Events so mouse, pen and touch behave
 * alike: a press and release without moving (a click or a tap) is a click at one image point;
 * a press, move and release is a drag that draws a box. Coordinates are image pixels.
 * An ES module: import {attachPointer} from "./pointer.js".
 */

// a press that moves less than this (CSS pixels) is a click; fingers wobble more than mice
const SLOP = { mouse: 4, pen: 6, touch: 10 };

/**
 * Listen on `canvas`. handlers:
 *   toImage(clientX, clientY) -> [x, y] image pixels, or null when there is no image;
 *   click(point, {shift, pointerType}) after a click or tap;
 *   dragMove(start, now) while dragging and dragMove(null) when a drag ends or is cancelled;
 *   dragEnd(start, end) when a drag is released.
 */
export function attachPointer(canvas, handlers) {
  let press = null;  // {id, start, client: [x, y], shift, pointerType, dragging}

  canvas.addEventListener("pointerdown", (event) => {
    if (press || (event.pointerType === "mouse" && event.button !== 0)) return;
    const start = handlers.toImage(event.clientX, event.clientY);
    if (!start) return;
    event.preventDefault();
    press = {
      id: event.pointerId, start: start, client: [event.clientX, event.clientY], shift: event.shiftKey,
      pointerType: event.pointerType || "mouse", dragging: false,
    };
    try {
      canvas.setPointerCapture(event.pointerId);
    } catch (err) {
      // a synthetic or already released pointer cannot be captured; window listeners still see it
    }
  });

  window.addEventListener("pointermove", (event) => {
    if (!press || event.pointerId !== press.id) return;
    const moved = Math.hypot(event.clientX - press.client[0], event.clientY - press.client[1]);
    if (!press.dragging && moved < (SLOP[press.pointerType] || SLOP.mouse)) return;
    press.dragging = true;
    handlers.dragMove(press.start, handlers.toImage(event.clientX, event.clientY) || press.start);
  });

  window.addEventListener("pointerup", (event) => {
    if (!press || event.pointerId !== press.id) return;
    const done = press;
    press = null;
    const end = handlers.toImage(event.clientX, event.clientY) || done.start;
    if (done.dragging) {
      handlers.dragMove(null);
      handlers.dragEnd(done.start, end);
    } else {
      handlers.click(done.start, { shift: done.shift || event.shiftKey, pointerType: done.pointerType });
    }
  });

  window.addEventListener("pointercancel", (event) => {
    if (!press || event.pointerId !== press.id) return;
    press = null;
    handlers.dragMove(null);
  });
}
