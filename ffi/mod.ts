/**
 * The native library, loaded once per thread (main or Worker) by the runtime's own FFI.
 * This folder is the only place that knows whether it runs under Deno or Bun.
 *
 * ```ts
 * import { native, addressOf } from "./ffi/mod.ts";
 * const fd = native.zc_socket(4);
 * ```
 * @module
 */
import { findLibrary } from "./library_path.ts";
import { runtime } from "./runtime.ts";
import type { NativeLibrary } from "./symbols.ts";

export { LIBRARY_ENV, NativeLibraryNotFoundError } from "./library_path.ts";
export { SocketOption } from "./symbols.ts";
export { Errno, errnoName, IOV_MAX, ORIGIN_ZEROCOPY, Poll, Shutdown, ZEROCOPY_COPIED } from "./kernel.ts";
export type { NativeLibrary } from "./symbols.ts";
export { runtime } from "./runtime.ts";

const loaded = runtime === "bun"
  ? await (await import("./bun.ts")).open(findLibrary())
  : (await import("./deno.ts")).open(findLibrary());

/** Every native symbol; results are raw kernel results (negative = -errno). */
export const native: NativeLibrary = loaded.lib;

/**
 * The native address of a view's first byte. Valid only while the view's buffer is
 * reachable from JS: hold a reference for as long as the kernel may use the address.
 */
export const addressOf: (view: ArrayBufferView) => number = loaded.addressOf;

/** Where {@link keepAlive} stores: a field of an object no optimizer can see all readers of. */
const held: { last?: unknown } = {};
/**
 * Keeps `value` reachable up to this call. An address from {@link addressOf} does not keep
 * its buffer alive, and neither does a local variable after its last use: the engines may
 * collect the buffer as soon as its address is taken and reuse its memory before the native
 * call reads it (seen under Bun: the region checksum's tags changed between the address and
 * the call, and about one transfer in 150 ended not verified). Call this after the native
 * call, for a buffer no field or caller holds. (The last value stays referenced until the
 * next call.) dev/address_lifetime.ts checks the repository for addresses of locals that
 * nothing references afterwards (tests/ffi_address.test.ts).
 */
export function keepAlive(value: unknown): void {
  held.last = value;
}

/**
 * A Uint8Array over native memory, e.g. a window into a mapped region. It does not own
 * the memory: use it only while the mapping exists. (Bun caps one view at 4 GiB.)
 */
export const viewOf: (address: number, length: number) => Uint8Array = loaded.viewOf;
