/**
 * Byte comparison and concatenation shared by the library, the examples, the benchmarks and
 * the tests.
 * @module
 */
import { Buffer } from "node:buffer";

/** Whether `a` and `b` hold the same bytes (the runtimes' native Buffer.equals: fast for large arrays). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length &&
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** `parts` one after the other in one new array. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
