// One error family: every error class the module exports derives from
// ZeroCopyMultifdError, and so does the error for a missing native library, which is
// thrown while the module loads.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import * as api from "../mod.ts";
import { run } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";

describe("errors", () => {
  test("every exported error class derives from ZeroCopyMultifdError", () => {
    const errorClasses = Object.entries(api).filter(([name, value]) =>
      typeof value === "function" && name.endsWith("Error")
    ) as [string, new (...args: never[]) => Error][];
    assert.ok(errorClasses.length >= 15, `only ${errorClasses.length} error classes exported`);
    for (const [name, errorClass] of errorClasses) {
      assert.ok(
        errorClass === api.ZeroCopyMultifdError || errorClass.prototype instanceof api.ZeroCopyMultifdError,
        `${name} does not derive from ZeroCopyMultifdError`,
      );
    }
  });

  test("a missing native library: NativeLibraryNotFoundError, a ZeroCopyMultifdError, naming the fix", async () => {
    const script = join(tmpdir(), `zcmf-nolib-${process.pid}.ts`);
    const errors = fileURLToPath(new URL("../src/errors.ts", import.meta.url));
    const mod = fileURLToPath(new URL("../mod.ts", import.meta.url));
    writeFileSync(
      script,
      `import { ZeroCopyMultifdError } from ${JSON.stringify(errors)};
try {
  await import(${JSON.stringify(mod)});
  console.log(JSON.stringify({ loaded: true }));
} catch (error) {
  console.log(JSON.stringify({ name: error.name, family: error instanceof ZeroCopyMultifdError, message: error.message }));
}`,
    );
    const argv = runtimeArgv(script);
    const child = await run(["env", `${api.LIBRARY_ENV}=/nonexistent/libzerocopy_multifd.so`, ...argv], 60_000)
      .finally(() => rmSync(script, { force: true }));
    const result = JSON.parse(child.stdout.trim().split("\n").at(-1)!);
    assert.equal(result.name, "NativeLibraryNotFoundError", child.stdout + child.stderr);
    assert.equal(result.family, true);
    assert.match(result.message, /\/nonexistent\/libzerocopy_multifd\.so/);
    assert.match(result.message, /npm run build/);
  });
});
