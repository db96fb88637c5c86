/**
 * Memory shared between a transfer's main thread and its channel Workers: a control
 * block (abort flag, the sender's packet cursor, the receiver's sync barrier) and one row
 * of counters per channel, which the Workers update and the main thread reads for
 * progress without any message.
 * @module
 */
import { ChannelClosedError } from "../errors.ts";

export const Control = {
  /** Non-zero once the transfer is aborted: Workers stop at their next step. */
  ABORT: 0,
  /** Sender: next packet index of the current round (claimed with Atomics.add). */
  CURSOR: 1,
  /** Receiver: generation of the sync barrier, bumped by the main thread to release it. */
  BARRIER: 2,
} as const;
const CONTROL_FIELDS = 4;

export const Counter = {
  bytes: 0,
  packets: 1,
  pagesNormal: 2,
  pagesZero: 3,
  zerocopySends: 4,
  zerocopyCompletions: 5,
  zerocopyCopied: 6,
  syncs: 7,
  zerocopyFlushesAllCopied: 8,
  zerocopyFallbacks: 9,
} as const;
export type CounterName = keyof typeof Counter;
const COUNTERS = 10;

/** Throws once the transfer is aborted: Workers call it before each step of their work. */
export function checkAbort(state: SharedState): void {
  if (Atomics.load(state.control, Control.ABORT) !== 0) throw new ChannelClosedError("transfer aborted");
}

export interface SharedState {
  control: Int32Array<SharedArrayBuffer>;
  counters: Float64Array<SharedArrayBuffer>;
  /** Channels of the transfer (rows of `counters`). */
  channels: number;
}

export function createSharedState(channels: number): SharedState {
  return {
    control: new Int32Array(new SharedArrayBuffer(CONTROL_FIELDS * 4)),
    counters: new Float64Array(new SharedArrayBuffer(channels * COUNTERS * 8)),
    channels,
  };
}

/** Index of a channel's counter in `counters`. */
export function counterIndex(channel: number, name: CounterName): number {
  return channel * COUNTERS + Counter[name];
}

/** Per-channel counters as plain objects. */
export function readCounters(state: SharedState, channels: number): Record<CounterName, number>[] {
  return Array.from({ length: channels }, (_, channel) => {
    const row = {} as Record<CounterName, number>;
    for (const name of Object.keys(Counter) as CounterName[]) {
      row[name] = state.counters[counterIndex(channel, name)];
    }
    return row;
  });
}
