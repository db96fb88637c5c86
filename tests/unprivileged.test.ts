// Zero-copy as an ordinary user. Without CAP_IPC_LOCK the kernel charges the pages of every
// outstanding MSG_ZEROCOPY send to RLIMIT_MEMLOCK (8 MiB by default) and refuses a send
// beyond it with ENOBUFS. Run as root (CI is), this test re-runs a 256 MiB zero-copy
// stream and a 4-channel zero-copy multifd transfer as the user nobody with `ulimit -l
// 8192`, in the runtime that runs the test: the channels' locked-memory budget must make
// them succeed, with (almost) no ENOBUFS retries. Without the budget (zerocopyBudgetBytes
// -1) one write longer than the limit fails every time.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { findLibrary } from "../ffi/library_path.ts";
import { runtime } from "../mod.ts";
import { run } from "../dev/child.ts";
import { isRoot, requirement } from "./helpers/preconditions.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MiB = 1 << 20;
const LIMIT_KIB = 8192;
const USER = "nobody";

/**
 * A copy of what the helper needs — the sources, the native library and this runtime's
 * binary — in a directory every user can read: CI's clone may sit under a directory
 * `nobody` cannot enter. Removed with the process's temporary files at the end.
 */
function stageForOrdinaryUser(): { dir: string; helper: string; runtimeBinary: string } {
  const dir = mkdtempSync(join(tmpdir(), "zcmf-unprivileged-tree-"));
  for (const part of ["mod.ts", "deno.json", "package.json", "ffi", "src", "util", "dev", "tests"]) {
    cpSync(join(ROOT, part), join(dir, part), { recursive: true });
  }
  mkdirSync(join(dir, "zig-out", "lib"), { recursive: true });
  copyFileSync(findLibrary(), join(dir, "zig-out", "lib", "libzerocopy_multifd.so"));
  mkdirSync(join(dir, "bin"));
  const runtimeBinary = join(dir, "bin", runtime);
  copyFileSync(process.execPath, runtimeBinary);
  spawnSync("chmod", ["-R", "a+rX", dir]);
  chmodSync(runtimeBinary, 0o755);
  return { dir, helper: join(dir, "tests", "helpers", "locked_memory_peer.ts"), runtimeBinary };
}

/** Why the test cannot run here, or undefined. */
function missingPrecondition(): string | undefined {
  if (!isRoot) return `needs root, to run zero-copy transfers as the user ${USER}`;
  if (spawnSync("runuser", ["--version"]).status !== 0) return "runuser (util-linux) is not installed";
  if (spawnSync("id", ["-u", USER]).status !== 0) return `there is no user ${USER}`;
  return undefined;
}

const missing = missingPrecondition();
// On CI a missing precondition is a failure, never a silent skip.
const skip = requirement(missing === undefined, missing ?? "");
const staged = missing === undefined ? stageForOrdinaryUser() : undefined;
after(() => staged && rmSync(staged.dir, { recursive: true, force: true }));

type Result = Record<string, unknown> & { error?: { name: string; code?: string; message: string } };

/** Runs the helper as `nobody` with RLIMIT_MEMLOCK at 8 MiB; returns its JSON line. */
async function asOrdinaryUser(args: string[]): Promise<Result> {
  const uid = Number(spawnSync("id", ["-u", USER], { encoding: "utf8" }).stdout);
  const gid = Number(spawnSync("id", ["-g", USER], { encoding: "utf8" }).stdout);
  // A writable HOME and DENO_DIR of its own (the user's home is /nonexistent).
  const home = mkdtempSync(join(tmpdir(), "zcmf-unprivileged-"));
  chownSync(home, uid, gid);
  try {
    const env = [`HOME=${home}`, `DENO_DIR=${join(home, "deno")}`, `PATH=${process.env.PATH}`, "NO_COLOR=1"];
    const argv = [
      "runuser",
      "-u",
      USER,
      "--",
      "env",
      ...env,
      "bash",
      "-c",
      `ulimit -l ${LIMIT_KIB} && exec "$@"`,
      "bash",
      ...(runtime === "deno"
        ? [staged!.runtimeBinary, "run", "-A", staged!.helper, ...args]
        : [staged!.runtimeBinary, staged!.helper, ...args]),
    ];
    const result = await run(argv, 180_000);
    const line = result.stdout.trim().split("\n").at(-1) ?? "";
    assert.ok(line.startsWith("{"), `no result from the helper (${result.code ?? result.signal}): ${result.stderr}`);
    const parsed = JSON.parse(line) as Result;
    // It really ran unprivileged, under the limit.
    assert.equal(parsed.runtime, runtime);
    assert.notEqual(parsed.uid, 0);
    assert.equal(parsed.limitBytes, LIMIT_KIB * 1024);
    assert.equal(parsed.exempt, false, "the process must be charged for pinned pages");
    return parsed;
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

const ok = (r: Result) => assert.equal(r.error, undefined, JSON.stringify(r.error));

describe(`zero-copy as ${USER} with RLIMIT_MEMLOCK ${LIMIT_KIB} KiB`, { skip }, () => {
  test("a 256 MiB zero-copy stream in 256 KiB writes stays within the budget: no ENOBUFS to retry", async () => {
    const r = await asOrdinaryUser(["stream", String(256 * MiB), String(256 * 1024)]);
    ok(r);
    assert.equal(r.verified, true, "bytes differ");
    assert.equal(r.bytesWritten, 256 * MiB);
    assert.equal(r.budget, r.processBudget, "the default budget is the process's");
    assert.ok((r.budget as number) > 0 && (r.budget as number) <= (LIMIT_KIB * 1024) / 2);
    assert.ok((r.maxPinned as number) <= (r.budget as number), `${r.maxPinned} pinned, budget ${r.budget}`);
    assert.equal(r.zerocopyCompletions, r.zerocopySends);
    assert.ok((r.zerocopyNoBufferRetries as number) <= 2, `${r.zerocopyNoBufferRetries} ENOBUFS retries`);
    console.log(
      `${runtime} as ${USER}: 256 MiB in ${r.ms} ms, ${r.zerocopySends} sends, ${r.zerocopyBudgetWaits} budget waits, ` +
        `${r.zerocopyNoBufferRetries} ENOBUFS retries`,
    );
  });

  test("64 MiB writes (longer than the whole limit) are split; without a budget the first one fails", async () => {
    const r = await asOrdinaryUser(["stream", String(256 * MiB), String(64 * MiB)]);
    ok(r);
    assert.equal(r.verified, true, "bytes differ");
    assert.ok((r.zerocopySends as number) >= 4 * Math.ceil((64 * MiB) / (r.budget as number)), `${r.zerocopySends}`);
    assert.ok((r.zerocopyNoBufferRetries as number) <= 2, `${r.zerocopyNoBufferRetries} ENOBUFS retries`);

    // The kernel charges a sendmsg for its whole length: 64 MiB can never fit in 8 MiB.
    const unbudgeted = await asOrdinaryUser(["stream", String(64 * MiB), String(64 * MiB), "-1"]);
    assert.equal(unbudgeted.error?.name, "ZeroCopyResourceError", JSON.stringify(unbudgeted));
    assert.equal(unbudgeted.zerocopySends, 0);
  });

  test("4-channel zero-copy multifd transfer of 256 MiB: every byte arrives", async () => {
    const r = await asOrdinaryUser(["multifd", String(256 * MiB), "4"]);
    ok(r);
    assert.equal(r.equal, true, "destination differs");
    assert.equal(r.verified, true, JSON.stringify(r));
    assert.equal(r.bytes, 256 * MiB);
    assert.ok((r.zerocopySends as number) > 0);
    console.log(`${runtime} as ${USER}: multifd 4 channels, 256 MiB zero-copy in ${r.ms} ms`);
  });
});
