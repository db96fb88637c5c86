/** Deterministic pseudo-random bytes (xorshift32), cheap enough for GiB-sized tests. */
export function patternBytes(length: number, seed: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return new Uint8Array(words.buffer, 0, length);
}

/** Small deterministic generator for sizes and split points. */
export function random(seed: number): (max: number) => number {
  let x = (seed | 0) || 1;
  return (max) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % max;
  };
}

export { sameBytes } from "../../util/bytes.ts";
