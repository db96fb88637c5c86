// Faults between two hosts (network namespaces joined by veth): every fault ends both
// sides with a typed error within seconds, never a hang and never a success result; each
// side is its own process, which must then exit by itself (no Worker or socket left).
// A peer still running after the watchdog's limit is killed and counts as hung, whatever
// exit status the runtime then reports for it.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { runtimeArgv } from "../dev/runtime.ts";
import { isRoot, requirement } from "./helpers/preconditions.ts";
import { inNamespace, sh, type TwoHosts, twoHosts } from "./helpers/netns.ts";

const peer = fileURLToPath(new URL("./helpers/fault_peer.ts", import.meta.url));
const skip = requirement(isRoot, "needs root for network namespaces (CI runs as root)");
const EXIT_LIMIT_MS = 20_000;
/** A peer still running this long after its start is killed: it hung. */
const WATCHDOG_MS = EXIT_LIMIT_MS * 2;

interface Outcome {
  code: number | null;
  signal: string | null;
  /** From the peer's start to its exit. */
  elapsedMs: number;
  /** When it exited (Date.now()). */
  exitedAt: number;
  /**
   * The watchdog killed it. Recorded here, not inferred from the exit status: behind the
   * shell, a killed peer may show as SIGKILL or, when the shell saw its child die before it
   * was killed itself, as the shell's own exit code 137 without a signal (seen under Bun).
   */
  hung: boolean;
  result: Record<string, unknown>;
}

interface Peer {
  child: ChildProcess;
  stdout: string;
  exited: Promise<Outcome>;
  waitFor(text: string): Promise<void>;
}

/**
 * Errors by which the kernel's dead-peer detection fails a socket: ETIMEDOUT, or the
 * soft error the unanswered retransmissions met on the way (no route once the link is down).
 */
const DEAD_PEER_CODES = ["ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"];
/**
 * How soon both sides must notice a dead link: the first retransmission or keepalive probe
 * (after 1 s idle, then every 5 s) past the 2 s user timeout fails the socket; measured
 * 2–7 s (sender) and 6–11 s (receiver). Far below the 60 s io timeout the test sets.
 */
const DEAD_PEER_LIMIT_MS = 20_000;

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
      let hung = false;
      const killer = setTimeout(() => {
        hung = true;
        spawnSync("pkill", ["-KILL", "-P", String(child.pid)]);
        child.kill("SIGKILL");
      }, WATCHDOG_MS);
      child.on("close", (code, signal) => {
        clearTimeout(killer);
        const last = self.stdout.trim().split("\n").at(-1) ?? "";
        let result: Record<string, unknown> = {};
        try {
          result = JSON.parse(last);
        } catch {
          result = { unparsed: last };
        }
        const exitedAt = Date.now();
        resolve({ code, signal, elapsedMs: exitedAt - started, exitedAt, hung, result });
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

/** The peer ended by itself (no watchdog, no signal) with a failure result. */
function assertFailedByItself(side: string, outcome: Outcome): void {
  const result = JSON.stringify(outcome.result);
  assert.equal(outcome.hung, false, `${side} hung: killed by the watchdog after ${WATCHDOG_MS} ms (${result})`);
  assert.equal(outcome.signal, null, `${side} must exit by itself, not by ${outcome.signal}`);
  assert.notEqual(outcome.code, 0, `${side} reported success: ${result}`);
  assert.equal(outcome.result.ok, false, `${side}: ${result}`);
}

/** The peers' outcome after a fault at `faultAt` (Date.now()): both must fail by themselves. */
async function expectBothFail(receiver: Peer, sender: Peer, faultAt: number) {
  const [r, s] = await Promise.all([receiver.exited, sender.exited]);
  assertFailedByItself("receiver", r);
  assertFailedByItself("sender", s);
  return { receiver: r, sender: s, settledMs: Math.max(r.exitedAt, s.exitedAt) - faultAt };
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
    const { settledMs } = await expectBothFail(receiver, sender, t);
    assert.ok(settledMs < EXIT_LIMIT_MS, `took ${settledMs} ms`);
  });

  test("the sender process killed (SIGKILL)", async () => {
    const { receiver, sender } = await start();
    signal(sender, "SIGKILL");
    assertFailedByItself("receiver", await receiver.exited);
  });

  test("the receiver process killed (SIGKILL)", async () => {
    const { receiver, sender } = await start();
    signal(receiver, "SIGKILL");
    assertFailedByItself("sender", await sender.exited);
  });

  /**
   * Stops `stalled` (SIGSTOP) until `waiting` has failed by itself, then lets it go on to fail
   * too; returns the waiting side's outcome and how long after the stop it ended.
   */
  async function stall(stalled: [string, Peer], waiting: [string, Peer]) {
    const t = Date.now();
    signal(stalled[1], "SIGSTOP");
    const outcome = await waiting[1].exited;
    signal(stalled[1], "SIGCONT");
    assertFailedByItself(waiting[0], outcome);
    assertFailedByItself(stalled[0], await stalled[1].exited);
    return { outcome, waitedMs: outcome.exitedAt - t };
  }

  test("a receiver that stops reading (stalled): the sender times out, the receiver then fails", async () => {
    const { receiver, sender } = await start();
    const { outcome } = await stall(["receiver", receiver], ["sender", sender]);
    assert.match(JSON.stringify(outcome.result), /TimeoutError|ETIMEDOUT/);
  });

  test("a sender that stops sending (stalled): the receiver times out within two io timeouts, the sender then fails", async () => {
    // Receive channels wait inside recvmsg for up to ioTimeoutMs (SO_RCVTIMEO), then in poll
    // for as long again: a stall is a TimeoutError after one to two ioTimeoutMs (3 s here).
    const { receiver, sender } = await start();
    const { outcome, waitedMs } = await stall(["sender", sender], ["receiver", receiver]);
    assert.match(JSON.stringify(outcome.result), /TimeoutError/);
    const limit = 2 * channel.ioTimeoutMs + 5_000;
    assert.ok(waitedMs >= channel.ioTimeoutMs && waitedMs < limit, `the receiver failed after ${waitedMs} ms`);
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
        channel: { ...channel, ioTimeoutMs: 8000, flushTimeoutMs: 1000, zerocopyFallback: false },
      });
      await sender.waitFor("PAUSED"); // between rounds: every SYNC acknowledged
      signal(receiver, "SIGSTOP");
      writeFileSync(pauseFile, "");
      const s = await sender.exited;
      signal(receiver, "SIGCONT");
      const r = await receiver.exited;
      assertFailedByItself("sender", s);
      assertFailedByItself("receiver", r);
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
      const { sender: s } = await expectBothFail(receiver, sender, Date.now());
      assert.match(JSON.stringify(s.result), /ZeroCopyResourceError/, JSON.stringify(s.result));
    } finally {
      sh(inNamespace(hosts.a.ns, ["sysctl", "-q", "-w", `net.core.optmem_max=${original}`]));
    }
  });

  test("a silently dead link (veth down): TCP_USER_TIMEOUT and keepalive notice it", async () => {
    // The io timeout is far longer than the test allows, so only the kernel's dead-peer
    // detection can end either side in time: the sender's unacknowledged data hits
    // TCP_USER_TIMEOUT (2 s), the idle receiver's keepalive probes (after 1 s, then every
    // 5 s) go unanswered past it. Either way the socket fails with the kernel's error.
    const ioTimeoutMs = 60_000;
    const { receiver, sender } = await start({ channel: { ...channel, ioTimeoutMs, flushTimeoutMs: ioTimeoutMs } });
    const t = Date.now();
    sh(inNamespace(hosts.a.ns, ["ip", "link", "set", hosts.a.device, "down"]));
    try {
      const outcomes = await expectBothFail(receiver, sender, t);
      for (const side of ["receiver", "sender"] as const) {
        const { result, exitedAt } = outcomes[side];
        const error = (result.error ?? {}) as { message?: string; code?: string };
        const detail = `${side}: ${JSON.stringify(result)}`;
        assert.ok(
          DEAD_PEER_CODES.includes(error.code ?? ""),
          `${side} failed with ${error.code} instead of a dead-peer error (${DEAD_PEER_CODES.join(", ")}): ${detail}`,
        );
        assert.doesNotMatch(error.message ?? "", /TimeoutError/, `${side} ended by its io timeout: ${detail}`);
        assert.ok(exitedAt - t < DEAD_PEER_LIMIT_MS, `${side} noticed the dead link after ${exitedAt - t} ms`);
      }
      console.log(
        `dead link: receiver ${outcomes.receiver.exitedAt - t} ms (${
          (outcomes.receiver.result.error as { code: string }).code
        }), sender ${outcomes.sender.exitedAt - t} ms (${(outcomes.sender.result.error as { code: string }).code})`,
      );
    } finally {
      sh(inNamespace(hosts.a.ns, ["ip", "link", "set", hosts.a.device, "up"]));
    }
  });
});
