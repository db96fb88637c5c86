/**
 * The abort matrix, run in a process of its own (its exit proves no Worker or socket was
 * left behind). For one mode ("plain" or "zerocopy") it runs every case of
 * PHASES × ACTIONS and prints one JSON line per case, then "DONE".
 *
 *   abort_matrix.ts cases MODE            run the matrix
 *   abort_matrix.ts peer-receiver MODE    one receiver (the victim of a kill): prints "PORT n"
 *   abort_matrix.ts peer-sender MODE PORT PHASE   one sender: prints "PHASE" when PHASE is reached
 *
 * A case: a transfer of rounds 0 and 1 (every page), round 2 (one page), then finish; when
 * the phase is reached, the action is taken: `sender.abort()`, `receiver.abort()`, or
 * SIGKILL of the peer process (the other side runs here). Each side here must then settle
 * (a typed error, or — only for an action that lost the race with the end — success)
 * within a few seconds, and afterwards this process must be back to its baseline: fds,
 * every channel Worker confirmed exited, regions no longer in use and closable.
 */
import process from "node:process";
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MultifdReceiver, MultifdSender, Region, ZeroCopyMultifdError } from "../../mod.ts";
import { fillPattern, SECRET } from "./multifd.ts";
import { runtimeArgv } from "../../dev/runtime.ts";
import { sleep } from "./time.ts";
import { WorkerPool } from "../../src/multifd/worker_pool.ts";

export const PHASES = [
  "handshake",
  "first-round",
  "mid-round",
  "sync-barrier",
  "zerocopy-flush",
  "checksum",
  "finish",
] as const;
export type Phase = typeof PHASES[number];
export const ACTIONS = ["abort-sender", "abort-receiver", "kill-sender", "kill-receiver"] as const;
export type Action = typeof ACTIONS[number];

/** Limit for a side to settle after the action (the test asserts well below it). */
export const SETTLE_LIMIT_MS = 8_000;
const SIZE = 96 << 20;
const CHANNELS = 4;
const LIMITS = { ioTimeoutMs: 5_000, flushTimeoutMs: 5_000, userTimeoutMs: 3_000, keepaliveIdleS: 1 };

export interface CaseResult {
  phase: Phase;
  action: Action;
  mode: string;
  /** Per side run here: "ok" or the error's class name (TypeError etc. are not typed). */
  sender?: string;
  receiver?: string;
  senderTyped?: boolean;
  receiverTyped?: boolean;
  settledMs: number;
  fdsBefore: number;
  fdsAfter: number;
  /** Channel Workers of this process not confirmed exited, after the case. */
  workersRunning: number;
  regionsInUse: number;
  regionsClosed: boolean;
}

const count = (dir: string) => readdirSync(dir).length;

/** Settles to "ok" or the error's name; `typed` says whether it is one of the module's errors. */
async function outcome(p: Promise<unknown>): Promise<{ name: string; typed: boolean }> {
  try {
    await p;
    return { name: "ok", typed: true };
  } catch (error) {
    return {
      name: `${(error as Error).name}: ${(error as Error).message}`,
      typed: error instanceof ZeroCopyMultifdError,
    };
  }
}

/** Resolves once `condition` holds (checked every millisecond or so). */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(1);
}

/**
 * Drives a sender through every phase, calling `reached()` once when `phase` begins
 * (without waiting for anything it does: the transfer goes on meanwhile).
 */
export async function driveSender(
  connect: (signal: AbortSignal) => Promise<MultifdSender>,
  phase: Phase,
  reached: (abortConnect: () => void) => void,
): Promise<unknown> {
  const connecting = new AbortController();
  const noop = () => {};
  const whenSending = (bytes: number) => void until(() => sender.bytesSent >= bytes).then(() => reached(noop));
  const connected = connect(connecting.signal);
  if (phase === "handshake") reached(() => connecting.abort("test abort"));
  const sender = await connected;
  if (phase === "first-round") whenSending(SIZE / 4);
  await sender.sendRound();
  if (phase === "mid-round") whenSending(SIZE + SIZE / 4);
  // All of round 1's data sent: what remains is the zero-copy flush and the sync.
  if (phase === "zerocopy-flush") whenSending(2 * SIZE);
  await sender.sendRound();
  const barrier = sender.sendRound([0]);
  if (phase === "sync-barrier") reached(noop);
  await barrier;
  const finishing = sender.finish();
  if (phase === "checksum") reached(noop);
  if (phase === "finish") void until(() => sender.phase !== "checksum").then(() => reached(noop));
  return await finishing;
}

function fillSource(): Region {
  const source = Region.allocate(SIZE);
  fillPattern(source, 3);
  return source;
}

const senderOptions = (port: number, zerocopy: boolean, signal: AbortSignal) => ({
  hostname: "127.0.0.1",
  port,
  secret: SECRET,
  channels: CHANNELS,
  zerocopy,
  // Every page zero-copy, so that aborts meet zero-copy sends outstanding in every phase
  // (loopback copies them all, which would otherwise end zero-copy after 32 MiB).
  zerocopyFallback: false,
  signal,
  ...LIMITS,
});

const listenOptions = { secret: SECRET, acceptTimeoutMs: 2_000, handshakeTimeoutMs: 2_000, ...LIMITS };

/** A peer process (the victim of a kill) and a way to wait for a line it prints. */
function startPeer(args: string[]): { child: ChildProcess; line(prefix: string): Promise<string> } {
  const argv = runtimeArgv(fileURLToPath(import.meta.url), args);
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "ignore"] });
  let stdout = "";
  child.stdout!.on("data", (d) => (stdout += d));
  return {
    child,
    line: (prefix) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = stdout.split("\n").find((l) => l.startsWith(prefix));
          if (found) resolve(found);
        };
        child.stdout!.on("data", check);
        child.on("close", () => reject(new Error(`peer exited before "${prefix}"`)));
        check();
      }),
  };
}

async function runCase(phase: Phase, action: Action, mode: string): Promise<CaseResult> {
  const zerocopy = mode === "zerocopy";
  const fdsBefore = count("/proc/self/fd");
  const regions: Region[] = [];
  let actedAt = 0;
  const act = (fn: () => unknown) => {
    actedAt = performance.now();
    void fn();
  };
  const result: Partial<CaseResult> = { phase, action, mode };

  if (action === "abort-sender" || action === "abort-receiver") {
    const source = fillSource();
    const destination = Region.allocate(SIZE);
    regions.push(source, destination);
    const receiver = await MultifdReceiver.listen(listenOptions);
    const receiving = outcome(receiver.receive(destination));
    let sender: MultifdSender | undefined;
    const sending = outcome(driveSender(
      async (signal) => {
        sender = await MultifdSender.connect(source, senderOptions(receiver.port, zerocopy, signal));
        return sender;
      },
      phase,
      (abortConnect) =>
        act(() => {
          if (action === "abort-receiver") return receiver.abort("test abort");
          return sender ? sender.abort("test abort") : abortConnect();
        }),
    ));
    const [s, r] = await Promise.all([sending, receiving]);
    Object.assign(result, { sender: s.name, senderTyped: s.typed, receiver: r.name, receiverTyped: r.typed });
  } else if (action === "kill-receiver") {
    // The receiver is the victim in its own process; the sender runs here.
    const peer = startPeer(["peer-receiver", mode]);
    const port = Number((await peer.line("PORT ")).split(" ")[1]);
    const source = fillSource();
    regions.push(source);
    const s = await outcome(driveSender(
      (signal) => MultifdSender.connect(source, senderOptions(port, zerocopy, signal)),
      phase,
      () => act(() => peer.child.kill("SIGKILL")),
    ));
    peer.child.kill("SIGKILL");
    Object.assign(result, { sender: s.name, senderTyped: s.typed });
  } else {
    // The sender is the victim in its own process; the receiver runs here.
    const destination = Region.allocate(SIZE);
    regions.push(destination);
    const receiver = await MultifdReceiver.listen(listenOptions);
    const receiving = outcome(receiver.receive(destination));
    const peer = startPeer(["peer-sender", mode, String(receiver.port), phase]);
    await peer.line("PHASE").then(() => act(() => peer.child.kill("SIGKILL")), () => {});
    const r = await receiving;
    peer.child.kill("SIGKILL");
    Object.assign(result, { receiver: r.name, receiverTyped: r.typed });
  }
  result.settledMs = Math.round(performance.now() - actedAt);
  result.regionsInUse = regions.reduce((sum, region) => sum + region.inUse, 0);
  await Promise.all(regions.map((region) => region.close()));
  result.regionsClosed = regions.every((region) => region.closed);
  // Teardown is complete when the calls settle; the reactor's helper Worker stops (and
  // closes its eventfd) shortly after: give it a moment, no more.
  for (let i = 0; i < 100 && count("/proc/self/fd") > fdsBefore; i++) {
    await sleep(20);
  }
  result.fdsBefore = fdsBefore;
  result.fdsAfter = count("/proc/self/fd");
  result.workersRunning = WorkerPool.running;
  return result as CaseResult;
}

const [command, mode, ...rest] = process.argv.slice(2);
if (command === "cases") {
  // Warm up (the runtime opens some fds and threads once, on first use), then the matrix.
  await runCase("finish", "abort-sender", mode);
  const only = process.env.ZCMF_ABORT_CASES?.split(",");
  for (const phase of PHASES) {
    for (const action of ACTIONS) {
      if (only && !only.includes(`${phase}/${action}`)) continue;
      console.log(JSON.stringify(await runCase(phase, action, mode)));
    }
  }
  console.log("DONE");
} else if (command === "peer-receiver") {
  const receiver = await MultifdReceiver.listen(listenOptions);
  console.log(`PORT ${receiver.port}`);
  const destination = Region.allocate(SIZE);
  await receiver.receive(destination).catch(() => {});
  await destination.close();
} else if (command === "peer-sender") {
  const [port, phase] = [Number(rest[0]), rest[1] as Phase];
  const source = fillSource();
  await driveSender(
    (signal) => MultifdSender.connect(source, senderOptions(port, mode === "zerocopy", signal)),
    phase,
    () => console.log("PHASE"),
  ).catch(() => {});
  await source.close();
}
