/**
 * Fast random data for the examples and the benchmarks: the first bytes from the system's
 * CSPRNG, the rest from xorshift128 seeded by it (~0.5 s per GiB in one thread). Random
 * everywhere — no repeated blocks, nothing compressible, no zero pages — but not for
 * cryptography.
 * @module
 */
import type { Region } from "../mod.ts";

/** Bytes taken from crypto.getRandomValues before the PRNG takes over. */
export const CSPRNG_BYTES = 16 << 20;
const WINDOW = 256 << 20;

/** xorshift128 (Marsaglia), 32-bit words. */
export class Xorshift128 {
  #x: number;
  #y: number;
  #z: number;
  #w: number;

  constructor(seed: Uint32Array = crypto.getRandomValues(new Uint32Array(4))) {
    [this.#x, this.#y, this.#z, this.#w] = seed;
    if ((this.#x | this.#y | this.#z | this.#w) === 0) this.#w = 0x9e3779b9; // the all-zero state is a fixed point
  }

  /** The next 32-bit value (unsigned). */
  next(): number {
    const t = this.#x ^ (this.#x << 11);
    this.#x = this.#y;
    this.#y = this.#z;
    this.#z = this.#w;
    this.#w = this.#w ^ (this.#w >>> 19) ^ t ^ (t >>> 8);
    return this.#w >>> 0;
  }

  /** An integer in [0, n) (n ≤ 2^32). */
  below(n: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * n);
  }

  /** Fills `words` (the hot loop: state in locals). */
  fill(words: Uint32Array): void {
    let x = this.#x, y = this.#y, z = this.#z, w = this.#w;
    for (let i = 0; i < words.length; i++) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = w ^ (w >>> 19) ^ t ^ (t >>> 8);
      words[i] = w;
    }
    this.#x = x, this.#y = y, this.#z = z, this.#w = w;
  }
}

/** Fills a whole region with random bytes, window by window (≤ 256 MiB each). */
export function fillRandom(region: Region): void {
  const head = Math.min(CSPRNG_BYTES, region.size);
  for (let offset = 0; offset < head; offset += 65536) {
    crypto.getRandomValues(region.view(offset, Math.min(65536, head - offset)));
  }
  const prng = new Xorshift128();
  for (let offset = head; offset < region.size; offset += WINDOW) {
    const length = Math.min(WINDOW, region.size - offset);
    const whole = length & ~3;
    const view = region.view(offset, length);
    // Region addresses are page-aligned, and so is `offset`: a Uint32Array view is allowed.
    prng.fill(new Uint32Array(view.buffer, view.byteOffset, whole / 4));
    for (let i = whole; i < length; i++) view[i] = prng.next() & 0xff;
  }
}
