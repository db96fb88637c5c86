// The abort matrix: abort from either side, and SIGKILL of the peer process, at every phase
// of a transfer (handshake, first round, mid-round, sync barrier, zero-copy flush, checksum,
// finish), plain and zero-copy. Each case must end every side still running with a typed
// error within seconds (or with success, only where the action lost the race with the
// end), with every channel Worker exited, every fd closed (the fd table back to its
// baseline) and the regions released and closable; and the process must exit by itself.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { MultifdReceiver, MultifdSender, Region, runtime } from "../mod.ts";
import { WorkerPool } from "../src/multifd/worker_pool.ts";
import { fillPattern, openTcpSockets, SECRET } from "./helpers/multifd.ts";
import { ACTIONS, type CaseResult, PHASES } from "./helpers/abort_matrix.ts";
import { run } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";

const matrix = fileURLToPath(new URL("./helpers/abort_matrix.ts", import.meta.url));
/** Seconds a side may take to settle after the action; the accept deadline (2 s) is the longest wait. */
const SETTLE_MS = 6_000;
const PROCESS_LIMIT_MS = 240_000;

for (const mode of ["plain", "zerocopy"]) {
  describe(`abort matrix (${mode}, ${runtime})`, () => {
    test(`${PHASES.length} phases x ${ACTIONS.length} actions`, async () => {
      const started = Date.now();
      const child = await run(runtimeArgv(matrix, ["cases", mode]), PROCESS_LIMIT_MS);
      const elapsed = Date.now() - started;
      assert.ok(elapsed < PROCESS_LIMIT_MS, `the matrix process hung (killed after ${elapsed} ms): ${child.stdout}`);
      assert.equal(child.code, 0, `the matrix process failed: ${child.stderr}`);
      const lines = child.stdout.trim().split("\n");
      assert.equal(lines.at(-1), "DONE", "the process must finish the matrix and exit by itself");
      const cases = lines.slice(0, -1).map((line) => JSON.parse(line) as CaseResult);
      assert.equal(cases.length, PHASES.length * ACTIONS.length);
      for (const c of cases) {
        const name = `${c.phase} / ${c.action}: ${JSON.stringify(c)}`;
        for (const side of ["sender", "receiver"] as const) {
          const outcome = c[side];
          if (outcome === undefined) continue; // that side was the killed process
          assert.equal(c[`${side}Typed`], true, `${name}: the ${side} failed with an untyped error`);
          // Only an action at the very end may lose the race and let a side succeed.
          if (c.phase !== "finish") assert.notEqual(outcome, "ok", `${name}: the ${side} reported success`);
        }
        assert.ok(c.settledMs < SETTLE_MS, `${name}: took ${c.settledMs} ms to settle`);
        assert.equal(c.workersRunning, 0, `${name}: channel Workers left running`);
        assert.equal(c.fdsAfter, c.fdsBefore, `${name}: the fd table is not back to its baseline`);
        assert.equal(c.regionsInUse, 0, `${name}: a region is still held`);
        assert.equal(c.regionsClosed, true, `${name}: a region did not close`);
      }
    });
  });
}

describe(`abort racing the normal end (${runtime})`, () => {
  test("abort() at every moment of finish(): one outcome, resources given back exactly once", async () => {
    const sockets = openTcpSockets();
    const source = Region.allocate(4 << 20);
    fillPattern(source, 11);
    const outcomes = new Set<string>();
    for (let attempt = 0; attempt < 24; attempt++) {
      const destination = Region.allocate(source.size);
      const receiver = await MultifdReceiver.listen({ secret: SECRET });
      const receiving = receiver.receive(destination).then(() => "ok", (e: Error) => e.name);
      const sender = await MultifdSender.connect(source, {
        hostname: "127.0.0.1",
        port: receiver.port,
        secret: SECRET,
        channels: 2,
      });
      await sender.sendRound();
      const finishing = sender.finish().then(() => "ok", (e: Error) => e.name);
      // From at once to after the end: every step of the checksum, END and VERDICT exchange.
      const delay = attempt % 8;
      if (delay === 0) await sender.abort("race");
      else setTimeout(() => void sender.abort("race"), delay);
      const [sent, received] = await Promise.all([finishing, receiving]);
      outcomes.add(`${sent}/${received}`);
      assert.ok(["ok", "TransferAbortedError"].includes(sent), `sender: ${sent}`);
      await new Promise((resolve) => setTimeout(resolve, 10)); // a late abort() after the end does nothing
      // Released exactly once: a second release would have thrown, a missing one keeps it held.
      assert.equal(source.inUse, 0);
      assert.equal(destination.inUse, 0);
      await destination.close();
      assert.equal(WorkerPool.running, 0);
    }
    await source.close();
    assert.equal(openTcpSockets(), sockets, "every fd closed");
    console.log(`abort racing the end: outcomes ${[...outcomes].join(", ")}`);
  });
});
