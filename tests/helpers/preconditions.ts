/** What a test needs from the machine: root, CI, and how a missing precondition skips or fails. */
import process from "node:process";

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
