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
 * the last send made from them: the kernel reads those pages after `sendmsg` returns. And
 * it sums what the kernel charges outstanding sends to locked memory (RLIMIT_MEMLOCK), so
 * that a channel can stay under its budget.
 * @module
 */
import { ZeroCopyAccountingError } from "./errors.ts";

const U32 = 0x1_0000_0000;

/**
 * Buffers of trackers whose socket went on to another owner ({@link ZeroCopyCompletions.abandon}):
 * nobody here can learn when the kernel is done with them, so they stay reachable for as
 * long as this thread lives. A bounded leak, in that edge case only.
 */
const abandoned: unknown[] = [];

/**
 * The bookkeeping a {@link SocketChannel} does for its MSG_ZEROCOPY sends, usable on its
 * own (e.g. over a socket of your own, or to test completion handling): record each
 * successful zero-copy `sendmsg`, apply the completion ranges read from the error queue,
 * and learn what is still outstanding, what is pinned, and whether the kernel copied.
 *
 * @example Ids 0..2 sent; the kernel completes them out of order, copied
 * ```ts
 * import { ZeroCopyCompletions } from "zerocopy-multifd";
 *
 * const tracker = new ZeroCopyCompletions();
 * const buffer = new Uint8Array(64 * 1024);
 * for (let i = 0; i < 3; i++) tracker.recordSend();
 * tracker.hold(buffer); // kept reachable until ids 0..2 have completed
 * tracker.complete(2, 2, true);
 * tracker.complete(0, 1, true);
 * console.log(tracker.outstanding, tracker.heldCount); // 0 0
 * console.log(tracker.endEpoch()); // 1: every completion since the last epoch was copied
 * ```
 */
export class ZeroCopyCompletions {
  /** Oldest id not yet known to be complete. */
  #base: number;
  /** Id the next send receives. */
  #next: number;
  /** Completed ranges beyond #base, as sorted, disjoint [start, end) offsets from #base. */
  #ahead: [number, number][] = [];
  /** Buffers to keep alive, each until every id before `until` is complete. */
  #held: { until: number; refs: unknown }[] = [];
  /** What becomes of buffers held from now on: kept here, dropped (socket closed), or abandoned. */
  #holding: "kept" | "dropped" | "abandoned" = "kept";
  /** Locked-memory charge of each outstanding send, oldest first: a ring of `#charges.length` (a power of 2). */
  #charges = new Float64Array(64);
  /** Ring index of the oldest outstanding send's charge. */
  #chargeHead = 0;
  /** Sum of the charges of outstanding sends (bytes). */
  #pinned = 0;

  /** Zero-copy sends recorded ({@link recordSend}) since the tracker was made. */
  sends = 0;
  /** Sends whose completion arrived. */
  completions = 0;
  /** Completed sends the kernel reported as copied (SO_EE_CODE_ZEROCOPY_COPIED). */
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

  /** Bytes the outstanding sends are charged to locked memory (the sum of their `charge`s). */
  get pinnedBytes(): number {
    return this.#pinned;
  }

  /**
   * Records one successful zero-copy sendmsg (non-zero length) that the kernel charged
   * `charge` bytes of locked memory, released when its completion arrives.
   */
  recordSend(charge = 0): void {
    const outstanding = this.outstanding;
    if (outstanding === this.#charges.length) this.#growCharges();
    this.#charges[(this.#chargeHead + outstanding) & (this.#charges.length - 1)] = charge;
    this.#pinned += charge;
    this.#next = (this.#next + 1) % U32;
    this.sends++;
  }

  /**
   * Adds `charge` to the newest outstanding send: a zero-copy sendmsg that failed may
   * have extended that send's notification, and the kernel keeps its charge until then.
   */
  chargeNewest(charge: number): void {
    const outstanding = this.outstanding;
    if (outstanding === 0) return;
    this.#charges[(this.#chargeHead + outstanding - 1) & (this.#charges.length - 1)] += charge;
    this.#pinned += charge;
  }

  /** Keeps `refs` reachable until every send recorded so far has completed. */
  hold(refs: unknown): void {
    if (this.outstanding === 0 || this.#holding === "dropped") return;
    if (this.#holding === "abandoned") abandoned.push(refs);
    else this.#held.push({ until: this.#next, refs });
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

  /**
   * The socket is closed (with SO_LINGER 0 when sends were outstanding, so the kernel
   * dropped their pages): drops every held reference, and any held from now on.
   */
  releaseAll(): void {
    this.#held = [];
    this.#holding = "dropped";
    this.#charges.fill(0);
    this.#pinned = 0;
  }

  /**
   * The socket lives on with another owner, who closes it at a time unknown here: the
   * held references, and any held from now on, move to a list that lives as long as this
   * thread (a bounded leak, since the kernel may read those buffers until that close).
   */
  abandon(): void {
    for (const entry of this.#held) abandoned.push(entry.refs);
    this.#held = [];
    this.#holding = "abandoned";
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
    const mask = this.#charges.length - 1;
    for (let i = 0; i < by; i++) this.#pinned -= this.#charges[(this.#chargeHead + i) & mask];
    this.#chargeHead = (this.#chargeHead + by) & mask;
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

  #growCharges(): void {
    const old = this.#charges;
    const grown = new Float64Array(old.length * 2);
    for (let i = 0; i < old.length; i++) grown[i] = old[(this.#chargeHead + i) & (old.length - 1)];
    this.#charges = grown;
    this.#chargeHead = 0;
  }
}
