// The README's main job: `npm run demo` (examples/migrate_demo.ts) under both runtimes, a
// smaller region: it migrates, verifies on both sides and compares byte for byte.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { lastJson, run } from "../dev/child.ts";
import { RUNTIMES, scriptArgv } from "../dev/runtime.ts";

const demo = fileURLToPath(new URL("../examples/migrate_demo.ts", import.meta.url));

describe("the demo", () => {
  for (const runtime of RUNTIMES) {
    test(`${runtime}: 64 MiB over 4 zero-copy channels, verified and identical`, async () => {
      const result = await run(scriptArgv(runtime, demo, ["--gib", "0.0625", "--json"]), 120_000);
      assert.equal(result.code, 0, result.stderr);
      const report = lastJson(result.stdout);
      assert.equal(report.runtime, runtime);
      assert.equal(report.ok, true);
      assert.equal(report.verified, true);
      assert.equal(report.equal, true, "the destination differs from the source");
      assert.equal(report.bytes, 64 * 2 ** 20);
      assert.equal(report.channels, 4);
      assert.equal(report.zerocopy, true);
    });
  }
});
