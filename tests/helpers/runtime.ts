/** Running a helper script under the runtime that runs the tests (deno or bun). */
import { spawn } from "node:child_process";
import process from "node:process";
import { runtime } from "../../mod.ts";

/** argv that runs `script` with this runtime, with every permission under Deno. */
export function runtimeArgv(script: string, args: string[] = []): string[] {
  return runtime === "deno"
    ? [process.execPath, "run", "-A", "--v8-flags=--expose-gc", script, ...args]
    : [process.execPath, script, ...args];
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (asynchronously: the event loop stays free). */
export function run(argv: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export const isRoot = process.getuid?.() === 0;

/** Whether this is a CI run (env CI set, as CI services do): every test's precondition must hold there. */
export const inCI = ["", "0", "false"].indexOf((process.env.CI ?? "").trim().toLowerCase()) < 0;

/**
 * A test's precondition, for `{ skip: requirement(ok, reason) }`: `false` (run the test)
 * when it holds, otherwise the reason to skip. In CI (env CI set; CI runs as root, with
 * IPv6 loopback) a missing precondition throws instead, failing the test file: a test
 * must not pass there by silently skipping.
 */
export function requirement(ok: boolean, reason: string): false | string {
  if (ok) return false;
  if (inCI) throw new Error(`precondition missing in CI (env CI is set): ${reason}`);
  return reason;
}

/** Forces a full garbage collection in either runtime (Deno needs --expose-gc). */
export function collectGarbage(): void {
  const g = globalThis as { Bun?: { gc(sync: boolean): void }; gc?: () => void };
  if (g.Bun) g.Bun.gc(true);
  else if (g.gc) g.gc();
  else throw new Error("no gc(): run deno with --v8-flags=--expose-gc");
}
