/**
 * Bun loader: `bun:ffi` over the shared symbol table. `bun:ffi` is imported by a
 * computed specifier so that Deno never tries to resolve it.
 * @module
 */
import type { ArgKind, Loaded, NativeLibrary, ResultKind } from "./symbols.ts";
import { symbols } from "./symbols.ts";

interface BunFfi {
  dlopen(path: string, table: Record<string, { args: string[]; returns: string }>): {
    symbols: Record<string, (...args: unknown[]) => number>;
  };
  ptr(view: ArrayBufferView): number;
  toArrayBuffer(address: number, offset: number, length: number): ArrayBuffer;
}

const ARG: Record<ArgKind, string> = { i32: "i32", u32: "u32", buffer: "buffer", address: "f64" };
const RESULT: Record<ResultKind, string> = { i32: "i32", f64: "f64" };

export async function open(path: string): Promise<Loaded> {
  const specifier = "bun:ffi";
  const ffi = (await import(specifier)) as BunFfi;
  const table = Object.fromEntries(
    Object.entries(symbols).map(([name, spec]) => [
      name,
      { args: spec.parameters.map((p) => ARG[p]), returns: RESULT[spec.result as ResultKind] },
    ]),
  );
  const dl = ffi.dlopen(path, table);
  return {
    lib: dl.symbols as unknown as NativeLibrary,
    addressOf: (view) => {
      // A small typed array starts with its bytes in JSC's heap; the first read of
      // `.buffer` copies them out to an ArrayBuffer. Read it first, so the address we
      // return (which the kernel may read until a completion) is the final one.
      const _materialized = view.buffer;
      return ffi.ptr(view);
    },
    viewOf: (address, length) =>
      length === 0 ? new Uint8Array(0) : new Uint8Array(ffi.toArrayBuffer(address, 0, length)),
  };
}
