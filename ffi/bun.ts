/**
 * Bun loader: `bun:ffi` over the shared symbol table. `bun:ffi` is imported by a
 * computed specifier so that Deno never tries to resolve it.
 * @module
 */
import type { ArgKind, NativeLibrary, ResultKind } from "./symbols.ts";
import { symbols } from "./symbols.ts";

interface BunFfi {
  dlopen(path: string, table: Record<string, { args: string[]; returns: string }>): {
    symbols: Record<string, (...args: unknown[]) => number>;
  };
  ptr(view: ArrayBufferView): number;
}

const ARG: Record<ArgKind, string> = { i32: "i32", u32: "u32", buffer: "buffer", address: "u64" };
const RESULT: Record<ResultKind, string> = { i32: "i32", address: "u64_fast" };

export async function open(
  path: string,
): Promise<{ lib: NativeLibrary; addressOf: (view: ArrayBufferView) => number }> {
  const specifier = "bun:ffi";
  const ffi = (await import(specifier)) as BunFfi;
  const table = Object.fromEntries(
    Object.entries(symbols).map(([name, spec]) => [
      name,
      { args: spec.parameters.map((p) => ARG[p]), returns: RESULT[spec.result as ResultKind] },
    ]),
  );
  const dl = ffi.dlopen(path, table);
  return { lib: dl.symbols as unknown as NativeLibrary, addressOf: (view) => ffi.ptr(view) };
}
