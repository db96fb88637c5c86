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
  /** Bytes not yet consumed. */
  remaining = 0;

  /** Points the array at `views` (empty views are skipped). */
  load(views: readonly ArrayBufferView[]): this {
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

  /** The unconsumed iovecs for the next syscall (at most IOV_MAX of them). */
  pending(): { words: Uint32Array; count: number } {
    const count = Math.min(this.#count - this.#first, IOV_MAX);
    const words = this.#first === 0 ? this.#words : this.#words.subarray(this.#first * WORDS_PER_IOVEC);
    return { words, count };
  }

  /** Consumes `bytes` from the front after a (possibly partial) transfer. */
  advance(bytes: number): void {
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

  #set(i: number, base: number, length: number): void {
    this.#bases[i] = base;
    this.#lengths[i] = length;
    const w = i * WORDS_PER_IOVEC;
    this.#words[w] = base % TWO_32;
    this.#words[w + 1] = Math.floor(base / TWO_32);
    this.#words[w + 2] = length % TWO_32;
    this.#words[w + 3] = Math.floor(length / TWO_32);
  }
}
