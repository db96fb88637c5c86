/**
 * Deno and Bun side by side, for the tests and the benchmarks: which one runs this
 * process, where each one's binary is, the command line that runs a script under either,
 * and what differs between them (garbage collection). Does not load the native library.
 * @module
 */
import { existsSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { runtime } from "../ffi/runtime.ts";
import { ROOT } from "./root.ts";

export type Runtime = "deno" | "bun";
export const RUNTIMES: readonly Runtime[] = ["deno", "bun"];

/** The runtime running this process. */
export const currentRuntime: Runtime = runtime;

/** The runtime not running this process. */
export const otherRuntime: Runtime = currentRuntime === "deno" ? "bun" : "deno";

/** The runtime's binary: the project's pinned one (node_modules/.bin), else the one on PATH. */
export function runtimeBinary(runtime: Runtime): string {
  const pinned = `${ROOT}node_modules/.bin/${runtime}`;
  return existsSync(pinned) ? pinned : runtime;
}

/** argv that runs `script` under `runtime` (its {@link runtimeBinary}), with every permission under Deno. */
export function scriptArgv(runtime: Runtime, script: string | URL, args: string[] = []): string[] {
  return argv(runtimeBinary(runtime), runtime, script, args, []);
}

/**
 * argv that runs `script` with the binary running this process, with every permission
 * and `v8Flags` (default `--expose-gc`, for {@link collectGarbage}) under Deno.
 */
export function runtimeArgv(script: string | URL, args: string[] = [], v8Flags = ["--expose-gc"]): string[] {
  return argv(process.execPath, currentRuntime, script, args, v8Flags);
}

function argv(binary: string, runtime: Runtime, script: string | URL, args: string[], v8Flags: string[]): string[] {
  const path = script instanceof URL ? fileURLToPath(script) : script;
  return runtime === "deno"
    ? [binary, "run", "-A", ...(v8Flags.length > 0 ? [`--v8-flags=${v8Flags.join(",")}`] : []), path, ...args]
    : [binary, path, ...args];
}

/** Forces a full garbage collection in either runtime (Deno needs --expose-gc). */
export function collectGarbage(): void {
  const g = globalThis as { Bun?: { gc(sync: boolean): void }; gc?: () => void };
  if (g.Bun) g.Bun.gc(true);
  else if (g.gc) g.gc();
  else throw new Error("no gc(): run deno with --v8-flags=--expose-gc");
}
