/**
 * A reusable `struct iovec` array (base, length as little-endian u64 pairs) over caller
 * buffers, advanced in place after partial sends and receives.
 * @module
 */
import { addressOf, IOV_MAX } from "../ffi/mod.ts";

const WORDS_PER_IOVEC = 4;
const TWO_32 = 0x1_0000_0000;

export class IovecArray {
  #words = new Uint32Array(16 * WORDS_PER_IOVEC);
  #bases: number[] = [];
  #lengths: number[] = [];
  #first = 0;
  #count = 0;
  /** The iovec {@link pending} shortened for one call (its words only), or -1. */
  #cut = -1;
  /**
   * The views {@link load} pointed the array at: an address keeps nothing alive, so the
   * array references them until {@link release} (while a write or read waits, its caller's
   * variables may be gone).
   */
  #views: readonly ArrayBufferView[] | undefined;
  /** Bytes not yet consumed. */
  remaining = 0;

  /** The loaded iovecs, all of them (for a native call that consumes them itself). */
  get words(): Uint32Array {
    return this.#words;
  }

  /** How many iovecs are loaded. */
  get count(): number {
    return this.#count;
  }

  /** Points the array at `views` (empty views are skipped). */
  load(views: readonly ArrayBufferView[]): this {
    this.#views = views;
    this.#cut = -1;
    this.#first = 0;
    this.#count = 0;
    this.remaining = 0;
    if (this.#words.length < views.length * WORDS_PER_IOVEC) {
      this.#words = new Uint32Array(views.length * WORDS_PER_IOVEC);
    }
    for (const view of views) {
      if (view.byteLength === 0) continue;
      this.#set(this.#count++, addressOf(view), view.byteLength);
      this.remaining += view.byteLength;
    }
    return this;
  }

  /** Points the array at native memory ranges given as (address, length) pairs. */
  loadRanges(addresses: readonly number[], lengths: readonly number[]): this {
    this.#views = undefined;
    this.#cut = -1;
    this.#first = 0;
    this.#count = 0;
    this.remaining = 0;
    if (this.#words.length < addresses.length * WORDS_PER_IOVEC) {
      this.#words = new Uint32Array(addresses.length * WORDS_PER_IOVEC);
    }
    for (let i = 0; i < addresses.length; i++) {
      if (lengths[i] === 0) continue;
      this.#set(this.#count++, addresses[i], lengths[i]);
      this.remaining += lengths[i];
    }
    return this;
  }

  /**
   * The unconsumed iovecs for the next syscall: at most IOV_MAX of them, holding at most
   * `maxBytes` (the last one shortened for this call only; e.g. a zero-copy send that
   * must stay within a locked-memory budget).
   */
  pending(maxBytes = Infinity): { words: Uint32Array; count: number } {
    this.#restoreCut();
    let count = Math.min(this.#count - this.#first, IOV_MAX);
    if (maxBytes < this.remaining) {
      let total = 0;
      for (let k = 0; k < count; k++) {
        const i = this.#first + k;
        total += this.#lengths[i];
        if (total < maxBytes) continue;
        if (total > maxBytes) {
          this.#cut = i;
          this.#writeWords(i, this.#bases[i], this.#lengths[i] - (total - maxBytes));
        }
        count = k + 1;
        break;
      }
    }
    const words = this.#first === 0 ? this.#words : this.#words.subarray(this.#first * WORDS_PER_IOVEC);
    return { words, count };
  }

  /** Consumes `bytes` from the front after a (possibly partial) transfer. */
  advance(bytes: number): void {
    this.#restoreCut();
    this.remaining -= bytes;
    while (bytes > 0) {
      const i = this.#first;
      const length = this.#lengths[i];
      if (bytes < length) {
        this.#set(i, this.#bases[i] + bytes, length - bytes);
        return;
      }
      bytes -= length;
      this.#first++;
    }
  }

  /** Ends the array's hold on the views it was loaded with (the operation is over). */
  release(): void {
    this.#views = undefined;
  }

  /** Gives the iovec that {@link pending} shortened its whole length back. */
  #restoreCut(): void {
    if (this.#cut < 0) return;
    this.#writeWords(this.#cut, this.#bases[this.#cut], this.#lengths[this.#cut]);
    this.#cut = -1;
  }

  #set(i: number, base: number, length: number): void {
    this.#bases[i] = base;
    this.#lengths[i] = length;
    this.#writeWords(i, base, length);
  }

  #writeWords(i: number, base: number, length: number): void {
    const w = i * WORDS_PER_IOVEC;
    this.#words[w] = base % TWO_32;
    this.#words[w + 1] = Math.floor(base / TWO_32);
    this.#words[w + 2] = length % TWO_32;
    this.#words[w + 3] = Math.floor(length / TWO_32);
  }
}
