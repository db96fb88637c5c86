/**
 * Accounting of MSG_ZEROCOPY sends and their completions, independent of any socket.
 *
 * The kernel numbers each successful zero-copy `sendmsg` on a socket with a 32-bit id
 * (0, 1, 2, …, wrapping after 2^32) and later reports completed ids as inclusive ranges
 * `[lo, hi]`; ranges may be coalesced, arrive out of order, and wrap (`hi < lo`). Ids are
 * handled as offsets from the oldest incomplete id, so wrapping needs no special case
 * (fewer than 2^31 sends are ever outstanding).
 *
 * The tracker also keeps the caller's buffers reachable until the completion that covers
 * the last send made from them: the kernel reads those pages after `sendmsg` returns.
 * @module
 */
import { ZeroCopyAccountingError } from "./errors.ts";

const U32 = 0x1_0000_0000;

export class ZeroCopyCompletions {
  /** Oldest id not yet known to be complete. */
  #base: number;
  /** Id the next send receives. */
  #next: number;
  /** Completed ranges beyond #base, as sorted, disjoint [start, end) offsets from #base. */
  #ahead: [number, number][] = [];
  /** Buffers to keep alive, each until every id before `until` is complete. */
  #held: { until: number; refs: unknown }[] = [];

  sends = 0;
  completions = 0;
  copied = 0;
  #epochCompletions = 0;
  #epochCopied = 0;

  /** `firstId` is for tests that start near the wrap; a socket always starts at 0. */
  constructor(firstId = 0) {
    this.#base = firstId >>> 0;
    this.#next = firstId >>> 0;
  }

  /** Sends whose completion has not arrived yet. */
  get outstanding(): number {
    return (this.#next - this.#base + U32) % U32;
  }

  /** How many groups of buffers are still kept alive. */
  get heldCount(): number {
    return this.#held.length;
  }

  /** Records one successful zero-copy sendmsg (non-zero length). */
  recordSend(): void {
    this.#next = (this.#next + 1) % U32;
    this.sends++;
  }

  /** Keeps `refs` reachable until every send recorded so far has completed. */
  hold(refs: unknown): void {
    if (this.outstanding === 0) return;
    this.#held.push({ until: this.#next, refs });
  }

  /** Applies one completion range [lo, hi] (inclusive, u32, may wrap). */
  complete(lo: number, hi: number, copied: boolean): void {
    const count = ((hi - lo + U32) % U32) + 1;
    const start = (lo - this.#base + U32) % U32;
    const end = start + count;
    if (end > this.outstanding) {
      throw new ZeroCopyAccountingError(
        `completion [${lo}, ${hi}] is outside the ${this.outstanding} outstanding sends from id ${this.#base}`,
      );
    }
    let at = 0;
    while (at < this.#ahead.length && this.#ahead[at][0] < start) at++;
    const before = this.#ahead[at - 1];
    const after = this.#ahead[at];
    if ((before && before[1] > start) || (after && after[0] < end)) {
      throw new ZeroCopyAccountingError(`completion [${lo}, ${hi}] was reported twice`);
    }
    this.#ahead.splice(at, 0, [start, end]);
    this.#merge(at);

    this.completions += count;
    this.#epochCompletions += count;
    if (copied) {
      this.copied += count;
      this.#epochCopied += count;
    }
    if (this.#ahead[0][0] === 0) this.#advance(this.#ahead.shift()![1]);
  }

  /**
   * Ends a flush epoch: 1 when at least one send completed since the previous call and
   * the kernel copied every one of them, 0 otherwise.
   */
  endEpoch(): 0 | 1 {
    const result = this.#epochCompletions > 0 && this.#epochCopied === this.#epochCompletions ? 1 : 0;
    this.#epochCompletions = 0;
    this.#epochCopied = 0;
    return result;
  }

  /** Drops every held reference (the connection was reset: the kernel let go of them). */
  releaseAll(): void {
    this.#held = [];
  }

  #merge(at: number): void {
    const ranges = this.#ahead;
    if (at + 1 < ranges.length && ranges[at][1] === ranges[at + 1][0]) {
      ranges[at][1] = ranges[at + 1][1];
      ranges.splice(at + 1, 1);
    }
    if (at > 0 && ranges[at - 1][1] === ranges[at][0]) {
      ranges[at - 1][1] = ranges[at][1];
      ranges.splice(at, 1);
    }
  }

  #advance(by: number): void {
    this.#base = (this.#base + by) % U32;
    for (const range of this.#ahead) {
      range[0] -= by;
      range[1] -= by;
    }
    const outstanding = this.outstanding;
    let released = 0;
    for (const entry of this.#held) {
      const distance = (entry.until - this.#base + U32) % U32;
      if (distance !== 0 && distance <= outstanding) break;
      released++;
    }
    if (released > 0) this.#held.splice(0, released);
  }
}
