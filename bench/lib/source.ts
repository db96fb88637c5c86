/**
 * The stream benchmarks' source: one 64 MiB buffer of random bytes, sent over and over in
 * 256 KiB slices. It is never modified, so zero-copy sends may reuse it before a flush.
 * @module
 */

import { addressOf } from "../../ffi/mod.ts";

export const SOURCE_BYTES = 64 << 20;
const PAGE_BYTES = 4096;
export const DEFAULT_WRITE_BYTES = 256 << 10;

/**
 * 64 KiB from the CSPRNG, doubled up to the whole buffer (every page touched: pre-faulted),
 * starting on a page boundary as zc-ref-send's mapping does, so that both send the same
 * pages. Deno's large ArrayBuffers start 16 bytes into a page (the allocator's header), Bun's
 * on a page boundary; a zero-copy send from an unaligned buffer pins one page more per write.
 * `pageOffset` starts it that many bytes into a page instead (stream.ts --source-offset).
 */
export function makeSource(bytes = SOURCE_BYTES, pageOffset = 0): Uint8Array {
  const backing = new Uint8Array(bytes + PAGE_BYTES);
  const skew = (PAGE_BYTES - addressOf(backing) % PAGE_BYTES + pageOffset) % PAGE_BYTES;
  const source = backing.subarray(skew, skew + bytes);
  crypto.getRandomValues(source.subarray(0, Math.min(65536, bytes)));
  for (let offset = 65536; offset < bytes; offset *= 2) source.copyWithin(offset, 0, Math.min(offset, bytes - offset));
  return source;
}

/** The slice for the write that starts at stream position `sent`. */
export function sliceAt(source: Uint8Array, sent: number, writeBytes: number, total: number): Uint8Array {
  const offset = sent % source.length;
  return source.subarray(offset, offset + Math.min(writeBytes, source.length - offset, total - sent));
}
