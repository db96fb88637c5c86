// ENOBUFS for real: inside a private network namespace whose net.core.optmem_max is tiny,
// the kernel cannot allocate a completion notification for every MSG_ZEROCOPY send.
// The channel must drain completions and retry (every byte still arrives), and when not
// even one notification fits, fail with ZeroCopyResourceError instead of hanging.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { inNamespace, sh } from "./helpers/netns.ts";
import { run } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";
import { isRoot, requirement } from "./helpers/preconditions.ts";

const skip = requirement(isRoot, "needs root to create a network namespace and set net.core.optmem_max in it");
const sender = fileURLToPath(new URL("./helpers/enobufs_sender.ts", import.meta.url));
let serial = 0;

/** Runs the sender helper in a fresh namespace with the given optmem_max; returns its JSON line. */
async function inTinyOptmem(optmemMax: number, args: string[]): Promise<Record<string, unknown>> {
  const ns = `zcmf-enobufs-${process.pid}-${serial++}`;
  sh(["ip", "netns", "add", ns]);
  try {
    sh(inNamespace(ns, ["ip", "link", "set", "lo", "up"]));
    const set = spawnSync("ip", inNamespace(ns, ["sysctl", "-q", "-w", `net.core.optmem_max=${optmemMax}`]).slice(1), {
      encoding: "utf8",
    });
    assert.equal(set.status, 0, `net.core.optmem_max cannot be set inside a namespace here: ${set.stderr}`);
    const readBack = sh(inNamespace(ns, ["cat", "/proc/sys/net/core/optmem_max"])).trim();
    assert.equal(readBack, String(optmemMax), "net.core.optmem_max is not per namespace on this kernel");
    const result = await run(inNamespace(ns, runtimeArgv(sender, args)), 60_000);
    const line = result.stdout.trim().split("\n").at(-1) ?? "";
    assert.ok(line.startsWith("{"), `no result from the sender (${result.code ?? result.signal}): ${result.stderr}`);
    return JSON.parse(line);
  } finally {
    spawnSync("ip", ["netns", "del", ns]);
  }
}

describe("ENOBUFS from a tiny net.core.optmem_max", { skip }, () => {
  test("20,000 small zero-copy sends at optmem_max 2048: ENOBUFS drained and retried, every byte arrives", async () => {
    const r = await inTinyOptmem(2048, ["stream", "20000"]);
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.verified, true, "bytes differ");
    assert.equal(r.bytesWritten, r.bytes);
    const retries = r.zerocopyNoBufferRetries as number;
    assert.ok(retries > 0, "the kernel never answered ENOBUFS: the limit did not bite");
    assert.ok((r.zerocopySends as number) >= 20_000);
    assert.equal(r.zerocopyCompletions, r.zerocopySends);
    assert.equal(r.flushed, 1);
    console.log(`optmem_max 2048: ${retries} ENOBUFS retries in ${r.zerocopySends} zero-copy sends (${r.ms} ms)`);
  });

  test("optmem_max 0: not one notification fits, so zero-copy sends fail with ZeroCopyResourceError", async () => {
    const r = await inTinyOptmem(0, ["refused"]);
    for (const key of ["asyncError", "syncError"]) {
      const error = r[key] as { name: string; code: string } | null;
      assert.ok(error, `${key}: the zero-copy send did not fail`);
      assert.equal(error.name, "ZeroCopyResourceError", `${key}: ${JSON.stringify(error)}`);
      assert.equal(error.code, "ENOBUFS");
    }
    assert.ok((r.ms as number) < 2_000, `refusing took ${r.ms} ms`);
    assert.equal(r.zerocopySends, 0);
    assert.equal(r.bytesWritten, 0, "a refused zero-copy send must not have written anything");
    assert.ok((r.zerocopyNoBufferRetries as number) >= 2);
    assert.equal(r.plainVerified, true, "the connection must stay usable for plain writes");
  });
});
