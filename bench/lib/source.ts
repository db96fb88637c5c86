/**
 * The stream benchmarks' source: one 64 MiB buffer of random bytes, sent over and over in
 * 256 KiB slices. It is never modified, so zero-copy sends may reuse it before a flush.
 * @module
 */

export const SOURCE_BYTES = 64 << 20;
export const DEFAULT_WRITE_BYTES = 256 << 10;

/** 64 KiB from the CSPRNG, doubled up to the whole buffer (every page touched: pre-faulted). */
export function makeSource(bytes = SOURCE_BYTES): Uint8Array {
  const source = new Uint8Array(bytes);
  crypto.getRandomValues(source.subarray(0, Math.min(65536, bytes)));
  for (let offset = 65536; offset < bytes; offset *= 2) source.copyWithin(offset, 0, Math.min(offset, bytes - offset));
  return source;
}

/** The slice for the write that starts at stream position `sent`. */
export function sliceAt(source: Uint8Array, sent: number, writeBytes: number, total: number): Uint8Array {
  const offset = sent % source.length;
  return source.subarray(offset, offset + Math.min(writeBytes, source.length - offset, total - sent));
}
