/**
 * The shared-memory layout and messages between the reactor (main thread) and its Worker.
 * @module
 */

/** Concurrent waits the reactor can hold. */
export const MAX_WAITS = 1024;

/** Int32 index of the stop flag. */
export const HEADER_STOP = 0;
/**
 * Int32 index of how many slots, from slot 0, the Worker scans: one past the highest slot
 * ever armed. A freed slot is reused before one never used (reactor.ts's free list is a
 * stack over 0, 1, 2, …), so this stays at the most waits held at once (a handful), not
 * MAX_WAITS; a scan of all 1,024 per wake-up made the Worker's loop hot enough for V8 to
 * compile it twice (~19 ms of a JIT thread's CPU during a transfer).
 */
export const HEADER_SCAN = 1;
const HEADER_FIELDS = 4;

/** Per slot; each slot's deadline (ms since the epoch, -1 = none) is in a parallel Float64Array. */
export const SLOT_FIELDS = 4;
export const FIELD_STATE = 0;
export const FIELD_FD = 1;
export const FIELD_EVENTS = 2;
export const FIELD_REVENTS = 3;

export const SLOT_FREE = 0;
export const SLOT_ARMED = 1;
export const SLOT_FIRED = 2;

/** Int32 index of a slot's first field. */
export function slotBase(slot: number): number {
  return HEADER_FIELDS + slot * SLOT_FIELDS;
}

export interface ReactorInit {
  shared: SharedArrayBuffer;
  eventfd: number;
}

export type ReactorReport =
  | { kind: "ready" }
  | { kind: "fired"; slots: number[] }
  | { kind: "failed"; errno: number }
  | { kind: "stopped" };
