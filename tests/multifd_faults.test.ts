// Faults between two hosts (network namespaces joined by veth): every fault ends both
// sides with a typed error within seconds, never a hang and never a success result; each
// side is its own process, which must then exit by itself (no Worker or socket left).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { isRoot, runtimeArgv } from "./helpers/runtime.ts";
import { inNamespace, sh, type TwoHosts, twoHosts } from "./helpers/netns.ts";

const peer = fileURLToPath(new URL("./helpers/fault_peer.ts", import.meta.url));
const skip = isRoot ? false : "needs root for network namespaces (CI runs as root)";
const EXIT_LIMIT_MS = 20_000;

interface Peer {
  child: ChildProcess;
  stdout: string;
  exited: Promise<{ code: number | null; signal: string | null; elapsedMs: number; result: Record<string, unknown> }>;
  waitFor(text: string): Promise<void>;
}

function startPeer(ns: string, args: string[], options: object): Peer {
  // A shell stays between us and the peer, so stopping the peer (SIGSTOP) is not seen as
  // its exit by this runtime's child-process handling (Deno reports a stopped child as closed).
  const argv = inNamespace(ns, ["sh", "-c", '"$@"; exit $?', "sh", ...runtimeArgv(peer, args)]);
  const child = spawn(argv[0], argv.slice(1), {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ZCMF_FAULT_OPTIONS: JSON.stringify(options) },
  });
  const started = Date.now();
  const self: Peer = {
    child,
    stdout: "",
    exited: new Promise((resolve) => {
      // A peer that does not exit by itself is a failure; kill it (not just the shell,
      // which would leave the peer holding our pipes) so the test reports it.
      const killer = setTimeout(() => {
        spawnSync("pkill", ["-KILL", "-P", String(child.pid)]);
        child.kill("SIGKILL");
      }, EXIT_LIMIT_MS * 2);
      child.on("close", (code, signal) => {
        clearTimeout(killer);
        const last = self.stdout.trim().split("\n").at(-1) ?? "";
        let result: Record<string, unknown> = {};
        try {
          result = JSON.parse(last);
        } catch {
          result = { unparsed: last };
        }
        resolve({ code, signal, elapsedMs: Date.now() - started, result });
      });
    }),
    waitFor: (text) =>
      new Promise((resolve, reject) => {
        const check = () => self.stdout.includes(text) && resolve();
        child.stdout!.on("data", check);
        self.exited.then(() => reject(new Error(`peer exited before "${text}": ${self.stdout}`)));
        check();
      }),
  };
  child.stdout!.on("data", (d) => (self.stdout += d));
  child.stderr!.resume();
  return self;
}

/** Sends a signal to the peer process itself (the shell's child). */
function signal(peer: Peer, name: NodeJS.Signals): void {
  const pid = Number(sh(["pgrep", "-P", String(peer.child.pid)]).trim().split("\n")[0]);
  process.kill(pid, name);
}

/** The peers' outcome after a fault: both must fail by themselves within the limit. */
async function expectBothFail(receiver: Peer, sender: Peer, faultAt: number) {
  const [r, s] = await Promise.all([receiver.exited, sender.exited]);
  for (const [side, outcome] of [["receiver", r], ["sender", s]] as const) {
    assert.equal(outcome.signal === "SIGKILL" && outcome.elapsedMs >= EXIT_LIMIT_MS * 2, false, `${side} hung`);
    assert.notEqual(outcome.code, 0, `${side} reported success: ${JSON.stringify(outcome.result)}`);
  }
  return { receiver: r, sender: s, settledMs: Math.max(r.elapsedMs, s.elapsedMs) - faultAt };
}

describe("faults between two hosts", { skip }, () => {
  let hosts: TwoHosts;
  before(() => (hosts = twoHosts()));
  after(() => hosts?.remove());

  const channel = { ioTimeoutMs: 3000, flushTimeoutMs: 3000, userTimeoutMs: 2000, keepaliveIdleS: 1 };

  async function start(options: object = {}, waitForProgress = true) {
    const receiver = startPeer(hosts.b.ns, ["recv", hosts.b.ip], { channel, ...options });
    const port = await new Promise<string>((resolve, reject) => {
      receiver.child.stdout!.on("data", () => {
        const match = /PORT (\d+)/.exec(receiver.stdout);
        if (match) resolve(match[1]);
      });
      receiver.exited.then(() => reject(new Error(`receiver exited: ${receiver.stdout}`)));
    });
    const sender = startPeer(hosts.a.ns, ["send", hosts.b.ip, port], { channel, ...options });
    if (waitForProgress) await sender.waitFor("PROGRESS");
    return { receiver, sender, port, startedAt: Date.now() };
  }

  test("one channel's connection reset mid-transfer (ss -K)", async () => {
    const { receiver, sender, port } = await start();
    const sockets = sh(inNamespace(hosts.a.ns, ["ss", "-tnH", "state", "established", "dst", `${hosts.b.ip}:${port}`]));
    const localPort = /:(\d+)\s+\S+:\d+\s*$/m.exec(sockets)?.[1];
    assert.ok(localPort, `no channel socket found: ${sockets}`);
    const t = Date.now();
    sh(inNamespace(hosts.a.ns, ["ss", "-K", "dst", `${hosts.b.ip}:${port}`, "sport", `= :${localPort}`]));
    const { settledMs } = await expectBothFail(receiver, sender, 0);
    assert.ok(Date.now() - t < EXIT_LIMIT_MS, `took ${settledMs} ms`);
  });

  test("the sender process killed (SIGKILL)", async () => {
    const { receiver, sender } = await start();
    signal(sender, "SIGKILL");
    const r = await receiver.exited;
    assert.notEqual(r.code, 0);
    assert.equal(r.signal, null, "the receiver must exit by itself");
    assert.equal(r.result.ok, false);
  });

  test("the receiver process killed (SIGKILL)", async () => {
    const { receiver, sender } = await start();
    signal(receiver, "SIGKILL");
    const s = await sender.exited;
    assert.notEqual(s.code, 0);
    assert.equal(s.signal, null, "the sender must exit by itself");
    assert.equal(s.result.ok, false);
  });

  test("a receiver that stops reading (stalled): the sender times out, the receiver then fails", async () => {
    const { receiver, sender } = await start();
    signal(receiver, "SIGSTOP");
    const s = await sender.exited;
    signal(receiver, "SIGCONT");
    const r = await receiver.exited;
    assert.notEqual(s.code, 0);
    assert.notEqual(r.code, 0);
    assert.match(JSON.stringify(s.result), /TimeoutError|ETIMEDOUT/);
  });

  test("a zero-copy flush that cannot complete is an error that aborts the transfer", async () => {
    // A tiny receive buffer on the receiving host: once the receiver stops reading, a small
    // round still fits in the sender's socket buffer (the writes finish) but cannot leave
    // it, so its zero-copy completions never come and the flush at the sync must fail.
    sh(inNamespace(hosts.b.ns, ["sysctl", "-q", "-w", "net.ipv4.tcp_rmem=4096 16384 16384"]));
    try {
      const pauseFile = join(tmpdir(), `zcmf-flush-${process.pid}`);
      const { receiver, sender } = await start({
        zerocopy: true,
        roundPages: 16,
        channels: 2,
        pauseFile,
        channel: { ...channel, ioTimeoutMs: 8000, flushTimeoutMs: 1000 },
      });
      await sender.waitFor("PAUSED"); // between rounds: every SYNC acknowledged
      signal(receiver, "SIGSTOP");
      writeFileSync(pauseFile, "");
      const s = await sender.exited;
      signal(receiver, "SIGCONT");
      const r = await receiver.exited;
      assert.notEqual(s.code, 0);
      assert.notEqual(r.code, 0);
      assert.match(JSON.stringify(s.result), /TimeoutError: flushZerocopy/, JSON.stringify(s.result));
    } finally {
      rmSync(join(tmpdir(), `zcmf-flush-${process.pid}`), { force: true });
      sh(inNamespace(hosts.b.ns, ["sysctl", "-q", "-w", "net.ipv4.tcp_rmem=4096 131072 6291456"]));
    }
  });

  test("a persistent ENOBUFS (optmem_max 0 on the sending host): typed error on both sides", async () => {
    // Not one zero-copy notification fits: every MSG_ZEROCOPY send fails with ENOBUFS while
    // nothing is pending, which draining cannot fix.
    const original = sh(inNamespace(hosts.a.ns, ["sysctl", "-n", "net.core.optmem_max"])).trim();
    sh(inNamespace(hosts.a.ns, ["sysctl", "-q", "-w", "net.core.optmem_max=0"]));
    try {
      const { receiver, sender } = await start({ zerocopy: true, channels: 2 }, false);
      const [r, s] = await Promise.all([receiver.exited, sender.exited]);
      assert.notEqual(s.code, 0);
      assert.notEqual(r.code, 0);
      assert.equal(s.signal, null, "the sender must exit by itself");
      assert.equal(r.signal, null, "the receiver must exit by itself");
      assert.match(JSON.stringify(s.result), /ZeroCopyResourceError/, JSON.stringify(s.result));
      assert.equal(r.result.ok, false);
    } finally {
      sh(inNamespace(hosts.a.ns, ["sysctl", "-q", "-w", `net.core.optmem_max=${original}`]));
    }
  });

  test("a silently dead link (veth down): TCP_USER_TIMEOUT and keepalive notice it", async () => {
    const { receiver, sender } = await start();
    sh(inNamespace(hosts.a.ns, ["ip", "link", "set", hosts.a.device, "down"]));
    try {
      await expectBothFail(receiver, sender, 0);
    } finally {
      sh(inNamespace(hosts.a.ns, ["ip", "link", "set", hosts.a.device, "up"]));
    }
  });
});
