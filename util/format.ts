/**
 * Numbers for JSON results and bytes as text, shared by the examples, the benchmarks and
 * the tests. (The library rounds its own stats: src/multifd/stats.ts.)
 * @module
 */

/** `value` rounded to `digits` decimal places (default 3): 1.23456 → 1.235. */
export function round(value: number, digits = 3): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** Bytes as lowercase hex, two digits each: [0, 171] → "00ab". */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
