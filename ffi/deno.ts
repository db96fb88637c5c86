/**
 * Deno loader: `Deno.dlopen` over the shared symbol table.
 * @module
 */
import type { ArgKind, NativeLibrary, ResultKind, Symbols } from "./symbols.ts";
import { symbols } from "./symbols.ts";

const ARG: Record<ArgKind, Deno.NativeType> = {
  i32: "i32",
  u32: "u32",
  buffer: "buffer",
  address: "usize",
};
const RESULT: Record<ResultKind, Deno.NativeResultType> = { i32: "i32", address: "usize" };

type DenoSymbols = { [K in keyof Symbols]: Deno.ForeignFunction };

export function open(path: string): { lib: NativeLibrary; addressOf: (view: ArrayBufferView) => number } {
  const table = Object.fromEntries(
    Object.entries(symbols).map(([name, spec]) => [
      name,
      { parameters: spec.parameters.map((p) => ARG[p]), result: RESULT[spec.result] },
    ]),
  ) as unknown as DenoSymbols;
  const dl = Deno.dlopen(path, table);
  const raw = dl.symbols as unknown as Record<string, (...args: unknown[]) => number | bigint>;
  const lib: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(symbols) as [keyof Symbols, Symbols[keyof Symbols]][]) {
    const fn = raw[name];
    // usize results may come back as BigInt; callers always get a number.
    lib[name] = (spec.result as ResultKind) === "address" ? (...a: unknown[]) => Number(fn(...a)) : fn;
  }
  return {
    lib: lib as NativeLibrary,
    addressOf: (view) => Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view as Uint8Array<ArrayBuffer>))),
  };
}
