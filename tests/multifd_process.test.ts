// Multifd across processes: Deno sender to Bun receiver and the reverse, and aborting a
// transfer from either side (both sides fail, every Worker exits, the process exits).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { runtime } from "../mod.ts";
import { run, runtimeArgv } from "./helpers/runtime.ts";

const peer = fileURLToPath(new URL("./helpers/multifd_peer.ts", import.meta.url));
const aborter = fileURLToPath(new URL("./helpers/multifd_abort.ts", import.meta.url));
const bin = (name: string) => fileURLToPath(new URL(`../node_modules/.bin/${name}`, import.meta.url));
const other = runtime === "deno" ? "bun" : "deno";
const otherArgv = (script: string, args: string[]) =>
  other === "deno" ? [bin("deno"), "run", "-A", script, ...args] : [bin("bun"), script, ...args];

/** Starts a receiver child and resolves with its port and its eventual result. */
function startReceiver(argv: string[]) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  );
  const port = new Promise<number>((resolve, reject) => {
    child.stdout.on("data", (d) => {
      stdout += d;
      const match = /PORT (\d+)/.exec(stdout);
      if (match) resolve(Number(match[1]));
    });
    exited.then(() => reject(new Error(`receiver exited early: ${stderr}`)));
  });
  return { port, exited, kill: () => child.kill("SIGKILL") };
}

const lastJson = (text: string) => JSON.parse(text.trim().split("\n").at(-1)!);
const SIZE = String(24 * 2 ** 20 + 4096 * 3 + 17);

describe("multifd between runtimes", () => {
  test(`${runtime} sender -> ${other} receiver`, async () => {
    const receiver = startReceiver(otherArgv(peer, ["recv", SIZE, "42"]));
    try {
      const port = await receiver.port;
      const sender = await run(runtimeArgv(peer, ["send", String(port), SIZE, "42", "3", "1"]), 60_000);
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      assert.deepEqual(lastJson(sender.stdout), { runtime, verified: true, bytes: Number(SIZE) });
      assert.deepEqual(lastJson(received.stdout), { runtime: other, verified: true, equal: true, bytes: Number(SIZE) });
    } finally {
      receiver.kill();
    }
  });

  test(`${other} sender -> ${runtime} receiver`, async () => {
    const receiver = startReceiver(runtimeArgv(peer, ["recv", SIZE, "7"]));
    try {
      const port = await receiver.port;
      const sender = await run(otherArgv(peer, ["send", String(port), SIZE, "7", "2", "0"]), 60_000);
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      assert.equal(lastJson(sender.stdout).verified, true);
      assert.deepEqual(lastJson(received.stdout), { runtime, verified: true, equal: true, bytes: Number(SIZE) });
    } finally {
      receiver.kill();
    }
  });
});

describe("cancelling a transfer", () => {
  for (const side of ["sender", "receiver"]) {
    test(`abort on the ${side} side: both sides fail, nothing is left, the process exits`, async () => {
      const result = await run(runtimeArgv(aborter, [side]), 60_000);
      assert.equal(result.signal, null, "the process had to be killed: something kept it alive");
      assert.equal(result.code, 0, result.stderr);
      const report = lastJson(result.stdout);
      assert.match(report.senderError, /Error/, "the sender must fail");
      assert.match(report.receiverError, /Error/, "the receiver must fail");
      assert.ok(report.settledMs < 10_000, `both sides settled after ${report.settledMs} ms`);
      assert.equal(report.socketsAfter, report.socketsBefore, "TCP sockets left open");
    });
  }
});
