// Multifd across processes: Deno sender to Bun receiver and the reverse, and aborting a
// transfer from either side (both sides fail, every Worker exits, the process exits).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runtime } from "../mod.ts";
import { fastAegisChecksum } from "../src/multifd/checksum.ts";
import { cpuIsX86_64V3, LIBRARY_ENV } from "../ffi/library_path.ts";
import { lastJson, LineChild, run } from "../dev/child.ts";
import { otherRuntime as other, runtimeArgv, scriptArgv } from "../dev/runtime.ts";

const peer = fileURLToPath(new URL("./helpers/multifd_peer.ts", import.meta.url));
const aborter = fileURLToPath(new URL("./helpers/multifd_abort.ts", import.meta.url));

/** Starts a receiver child; `port` resolves once it prints "PORT n". */
function startReceiver(argv: string[]) {
  const child = new LineChild(argv, { label: "receiver" });
  const port = child.waitFor(/PORT (\d+)/).then((match) => Number(match[1]));
  const exited = child.exited.then(({ code }) => ({ code, stdout: child.stdout, stderr: child.stderr }));
  return { port, exited, kill: () => child.kill() };
}

const SIZE = String(24 * 2 ** 20 + 4096 * 3 + 17);
/** The region checksum's MAC two ends on this machine's default build agree on (checksum.ts). */
const FAST_MAC = fastAegisChecksum() ? "aegis-128l" : "blake3";

describe("multifd between runtimes", () => {
  test(`${runtime} sender -> ${other} receiver`, async () => {
    const receiver = startReceiver(scriptArgv(other, peer, ["recv", SIZE, "42"]));
    try {
      const port = await receiver.port;
      const sender = await run(runtimeArgv(peer, ["send", String(port), SIZE, "42", "3", "1"]), 60_000);
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      assert.deepEqual(lastJson(sender.stdout), { runtime, verified: true, bytes: Number(SIZE), checksum: FAST_MAC });
      assert.deepEqual(lastJson(received.stdout), {
        runtime: other,
        verified: true,
        equal: true,
        bytes: Number(SIZE),
        encryption: "none",
        checksum: FAST_MAC,
      });
    } finally {
      await receiver.kill();
    }
  });

  for (const cipher of ["aegis-128l", "aes-256-gcm"]) {
    test(`${other} sender -> ${runtime} receiver, encrypted (${cipher}), zero-copy`, async () => {
      const receiver = startReceiver(runtimeArgv(peer, ["recv", SIZE, "7"]));
      try {
        const port = await receiver.port;
        const argv = ["send", String(port), SIZE, "7", "2", "1", cipher];
        const sender = await run(scriptArgv(other, peer, argv), 60_000);
        assert.equal(sender.code, 0, sender.stderr);
        const received = await receiver.exited;
        assert.equal(received.code, 0, received.stderr);
        assert.equal(lastJson(sender.stdout).verified, true);
        assert.deepEqual(lastJson(received.stdout), {
          runtime,
          verified: true,
          equal: true,
          bytes: Number(SIZE),
          encryption: cipher,
          checksum: FAST_MAC,
        });
      } finally {
        await receiver.kill();
      }
    });
  }
});

describe("multifd between the two builds of the native library", () => {
  // The region checksum and the ciphers must be the same whichever build computes them: a
  // sender on an old CPU (baseline x86-64, software AES) and a receiver on a new one (x86-64-v3
  // with AES-NI) verify each other, plain and encrypted. The checksum is AEGIS-128L-MAC only
  // when both ends have AES instructions (the receiver says so in HELLO), else BLAKE3.
  const lib = (file: string) => fileURLToPath(new URL(`../zig-out/lib/${file}`, import.meta.url));
  const baseline = `${LIBRARY_ENV}=${lib("libzerocopy_multifd.so")}`;
  const v3 = `${LIBRARY_ENV}=${lib("libzerocopy_multifd_x86_64_v3.so")}`;
  const pairs = [
    [baseline, v3, "plain"],
    [v3, baseline, "plain"],
    [baseline, v3, "aegis-128l"],
    [v3, baseline, "aes-256-gcm"],
    [v3, v3, "plain"],
  ];
  for (const [senderLib, receiverLib, cipher] of pairs) {
    const name = (env: string) => env.includes("v3") ? "x86-64-v3" : "baseline";
    test(`${name(senderLib)} sender -> ${name(receiverLib)} receiver, ${cipher}: verified`, {
      skip: !cpuIsX86_64V3() && "this CPU cannot run the x86-64-v3 build",
    }, async () => {
      const receiver = startReceiver(["env", receiverLib, ...runtimeArgv(peer, ["recv", SIZE, "5"])]);
      try {
        const port = await receiver.port;
        const encrypt = cipher === "plain" ? [] : [cipher];
        const argv = ["send", String(port), SIZE, "5", "2", "0", ...encrypt];
        const sender = await run(["env", senderLib, ...runtimeArgv(peer, argv)]);
        assert.equal(sender.code, 0, sender.stderr);
        const received = await receiver.exited;
        assert.equal(received.code, 0, received.stderr);
        assert.equal(lastJson(sender.stdout).verified, true);
        assert.equal(lastJson(received.stdout).verified, true);
        assert.equal(lastJson(received.stdout).encryption, cipher === "plain" ? "none" : cipher);
        const mac = senderLib === v3 && receiverLib === v3 ? "aegis-128l" : "blake3";
        assert.equal(lastJson(sender.stdout).checksum, mac);
        assert.equal(lastJson(received.stdout).checksum, mac);
      } finally {
        await receiver.kill();
      }
    });
  }

  test("cpuIsX86_64V3 reads every v3 flag, and AES-NI and PCLMULQDQ, from /proc/cpuinfo", () => {
    const v3Flags = "fpu sse2 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave aes pclmulqdq";
    assert.equal(cpuIsX86_64V3(`processor : 0\nflags\t\t: ${v3Flags}\n`), true);
    assert.equal(cpuIsX86_64V3(`flags : ${v3Flags.replace("avx2 ", "")}\n`), false);
    assert.equal(cpuIsX86_64V3(`flags : ${v3Flags.replace(" aes", "")}\n`), false);
    assert.equal(cpuIsX86_64V3("processor : 0\n"), false);
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
