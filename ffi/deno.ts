/**
 * Deno loader: `Deno.dlopen` over the shared symbol table.
 * @module
 */
import type { ArgKind, Loaded, NativeLibrary, ResultKind, Symbols } from "./symbols.ts";
import { symbols } from "./symbols.ts";

const ARG: Record<ArgKind, Deno.NativeType> = {
  i32: "i32",
  u32: "u32",
  buffer: "buffer",
  address: "usize",
};
const RESULT: Record<ResultKind, Deno.NativeResultType> = { i32: "i32", f64: "f64" };

type DenoSymbols = { [K in keyof Symbols]: Deno.ForeignFunction };

export function open(path: string): Loaded {
  const table = Object.fromEntries(
    Object.entries(symbols).map(([name, spec]) => [
      name,
      { parameters: spec.parameters.map((p) => ARG[p]), result: RESULT[spec.result] },
    ]),
  ) as unknown as DenoSymbols;
  const dl = Deno.dlopen(path, table);
  const lib = dl.symbols as unknown as NativeLibrary;
  return {
    lib,
    addressOf: (view) => {
      // As in bun.ts: reading `.buffer` first moves a small typed array's bytes out of
      // the engine's heap, so that the address stays valid for the buffer's life.
      const _materialized = view.buffer;
      return lib.zc_address_of(view);
    },
    viewOf: (address, length) => {
      if (length === 0) return new Uint8Array(0);
      const pointer = Deno.UnsafePointer.create(BigInt(address))!;
      return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, length));
    },
  };
}
