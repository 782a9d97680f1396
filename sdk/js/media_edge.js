// Edge reading of a media element's `currentTime` (PROTOCOL.md §12.5.2; the driver side of
// `core::sync::position`'s edge readings). A `currentTime` refreshed every few ms (headless
// Firefox: about 40) lags the element by up to that, and holds still for the rest of a task
// once read; so it is read once per task (a MessageChannel round: not clamped like nested
// timers) until its value changes. The new value was current between the start of the read
// before and the end of this one.
//
// readEdge(el, maxMs) resolves with {position (s), atMs (the midpoint of those two reads,
// performance.now() ms), spanMs (their distance)} for the first change seen within 1 ms, else
// the tightest change seen within maxMs, or null (no change: paused, stalled, seeking).

export function readEdge(el, maxMs) {
  return new Promise((resolve) => {
    const now = () => performance.now();
    const channel = new MessageChannel();
    const t0 = now();
    let prevFrom = t0;
    let prev = el.currentTime;
    let best = null;
    const done = () => {
      channel.port1.onmessage = null;
      channel.port1.close();
      resolve(best);
    };
    channel.port1.onmessage = () => {
      const from = now();
      const v = el.currentTime;
      const to = now();
      if (v !== prev) {
        const spanMs = to - prevFrom;
        if (best === null || spanMs < best.spanMs) best = { position: v, atMs: (prevFrom + to) / 2, spanMs };
        if (spanMs <= 1) return done();
      }
      prev = v;
      prevFrom = from;
      if (to - t0 >= maxMs || el.paused || el.seeking) return done();
      channel.port2.postMessage(0);
    };
    channel.port2.postMessage(0);
  });
}
