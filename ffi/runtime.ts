/**
 * Which runtime runs this thread. A module of its own so that code which only needs to
 * know (tooling, child-process command lines) does not load the native library.
 * @module
 */

/** "bun" or "deno": the runtime this process runs on. */
export const runtime: "bun" | "deno" = "Bun" in globalThis ? "bun" : "deno";
