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
  address: "f64",
};
const RESULT: Record<ResultKind, Deno.NativeResultType> = { i32: "i32", f64: "f64" };

/**
 * Each symbol is bound on its first use: Deno compiles a call trampoline for each symbol it
 * binds, which every Worker paid at its start for the whole table (importing this library
 * took 17–18 ms so, 5–6 ms now: bench/startup.ts, bench/RESULTS.md), and a channel Worker
 * calls about a third of the table. The library is opened (and so checked) at once, with
 * the one symbol every user calls.
 */
export function open(path: string): Loaded {
  const bind = (name: string) => {
    const spec = symbols[name as keyof Symbols];
    const table = { [name]: { parameters: spec.parameters.map((p) => ARG[p]), result: RESULT[spec.result] } };
    return Deno.dlopen(path, table).symbols[name];
  };
  const getters: PropertyDescriptorMap = {};
  for (const name of Object.keys(symbols)) {
    getters[name] = {
      get(this: object) {
        const fn = bind(name);
        Object.defineProperty(this, name, { value: fn, enumerable: true }); // later calls: a plain property
        return fn;
      },
    };
  }
  const lib = Object.create(Object.create(null, getters)) as NativeLibrary;
  lib.zc_address_of; // opens the library now: a file that does not load fails here, not at a first use
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
