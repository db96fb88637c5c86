/**
 * The reactor's helper thread: blocks in poll(2) over the eventfd plus every armed slot,
 * fires slots whose fd is ready or whose deadline passed, and reports them in one message.
 * @module
 */
import { Errno, native, Poll } from "../ffi/mod.ts";
import {
  FIELD_EVENTS,
  FIELD_FD,
  FIELD_REVENTS,
  FIELD_STATE,
  HEADER_SCAN,
  HEADER_STOP,
  MAX_WAITS,
  type ReactorInit,
  type ReactorReport,
  SLOT_ARMED,
  SLOT_FIRED,
  slotBase,
} from "./reactor_layout.ts";

declare const self: {
  onmessage: ((event: MessageEvent<ReactorInit>) => void) | null;
  postMessage(message: ReactorReport): void;
};

function run({ shared, eventfd }: ReactorInit): void {
  const control = new Int32Array(shared, 0, slotBase(MAX_WAITS));
  const deadlines = new Float64Array(shared, slotBase(MAX_WAITS) * 4, MAX_WAITS);
  // struct pollfd { int fd; short events; short revents; } as two int32 words.
  const pollfds = new Int32Array((MAX_WAITS + 1) * 2);
  const polled = new Int32Array(MAX_WAITS);

  while (Atomics.load(control, HEADER_STOP) === 0) {
    pollfds[0] = eventfd;
    pollfds[1] = Poll.IN;
    let count = 0;
    let nearest = Infinity;
    const scanned = Atomics.load(control, HEADER_SCAN);
    for (let slot = 0; slot < scanned; slot++) {
      const base = slotBase(slot);
      if (Atomics.load(control, base + FIELD_STATE) !== SLOT_ARMED) continue;
      polled[count++] = slot;
      pollfds[count * 2] = control[base + FIELD_FD];
      pollfds[count * 2 + 1] = control[base + FIELD_EVENTS] & 0xffff;
      if (deadlines[slot] >= 0) nearest = Math.min(nearest, deadlines[slot]);
    }
    const timeoutMs = nearest === Infinity ? -1 : Math.max(0, Math.ceil(nearest - Date.now()));
    const rc = native.zc_poll(pollfds, count + 1, timeoutMs);
    if (rc < 0 && rc !== -Errno.EINTR) {
      self.postMessage({ kind: "failed", errno: -rc });
      return;
    }
    if ((pollfds[1] >>> 16) !== 0) native.zc_eventfd_clear(eventfd);
    const now = Date.now();
    const fired: number[] = [];
    for (let i = 0; i < count; i++) {
      const slot = polled[i];
      const revents = pollfds[(i + 1) * 2 + 1] >>> 16;
      if (revents === 0 && (deadlines[slot] < 0 || deadlines[slot] > now)) continue;
      const base = slotBase(slot);
      control[base + FIELD_REVENTS] = revents;
      Atomics.store(control, base + FIELD_STATE, SLOT_FIRED);
      fired.push(slot);
    }
    if (fired.length > 0) self.postMessage({ kind: "fired", slots: fired });
  }
  self.postMessage({ kind: "stopped" });
}

// Set before anything else can run, then announce: a message sent to a Worker before it
// listens is lost, so the main thread waits for "ready" before sending the set-up.
self.onmessage = (event) => {
  self.onmessage = null;
  run(event.data);
};
self.postMessage({ kind: "ready" });
