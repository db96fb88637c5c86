/**
 * Byte comparison shared by the library, the examples, the benchmarks and the tests.
 * @module
 */
import { Buffer } from "node:buffer";

/** Whether `a` and `b` hold the same bytes (the runtimes' native Buffer.equals: fast for large arrays). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length &&
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
