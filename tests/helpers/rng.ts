/**
 * mulberry32: a small, fast, deterministic generator for seeded test inputs (fuzzing,
 * mutated streams). The same seed gives the same sequence of draws in both runtimes.
 * @module
 */

export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** The next 32-bit value (unsigned). */
  u32(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  // One 32-bit draw each: cheap, for small ranges.

  /** 0 .. max-1 (`u32() % max`). */
  int(max: number): number {
    return this.u32() % max;
  }

  /** True with probability `p`, 32-bit resolution. */
  chance32(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  /** `length` bytes, four from each draw. */
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i += 4) {
      const x = this.u32();
      out[i] = x;
      if (i + 1 < length) out[i + 1] = x >>> 8;
      if (i + 2 < length) out[i + 2] = x >>> 16;
      if (i + 3 < length) out[i + 3] = x >>> 24;
    }
    return out;
  }

  // Two draws each: uniform over large ranges.

  /** Uniform in [0, 1) with 53 bits. */
  unit(): number {
    return ((this.u32() >>> 11) * 2 ** 32 + this.u32()) / 2 ** 53;
  }

  /** Integer in [0, n), n up to 2^53. */
  below(n: number): number {
    return Math.floor(this.unit() * n);
  }

  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  /** True with probability `p`, 53-bit resolution. */
  chance(p: number): boolean {
    return this.unit() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }
}
