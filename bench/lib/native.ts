/**
 * The native reference programs (zig/bench/, installed by `zig build` into zig-out/bin/):
 * `zc-ref-sink` receives one stream, `zc-ref-send` sends one, `zc-ref-multifd` moves a
 * region over N connections with the channel Workers' system calls and nothing else. Built
 * on demand with the pinned Zig when missing (a fresh clone after `npm install` already has
 * them).
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { LineChild } from "../../dev/child.ts";
import { ROOT } from "../../dev/root.ts";
import { err as note } from "../../util/output.ts";

export type NativeProgram = "zc-ref-sink" | "zc-ref-send" | "zc-ref-multifd";

let buildTried = false;

/** Path of a native reference program, building it if needed; undefined when it cannot be built. */
export function nativeProgram(name: NativeProgram): string | undefined {
  const path = `${ROOT}zig-out/bin/${name}`;
  if (existsSync(path)) return path;
  if (!buildTried) {
    buildTried = true;
    note(`bench: ${path} missing, building with the pinned Zig (node scripts/build_native.mjs)…`);
    const result = spawnSync("node", [`${ROOT}scripts/build_native.mjs`], { cwd: ROOT, stdio: ["ignore", 2, 2] });
    if (result.status !== 0) note("bench: the native build failed; native reference cases are skipped");
  }
  return existsSync(path) ? path : undefined;
}

/** What zc-ref-sink prints when the stream ends. */
export interface SinkResult {
  bytes: number;
  seconds: number;
  GBps: number;
  cpuSeconds: number;
  calls: number;
  peakRssKiB: number;
}

/** What zc-ref-send prints. */
export interface RefSendResult {
  bytes: number;
  seconds: number;
  GBps: number;
  cpuSeconds: number;
  calls: number;
  nsPerCall: number;
  zerocopySends?: number;
  zerocopyCompletions?: number;
  zerocopyCopied?: number;
  enobufs?: number;
}

/** A running zc-ref-sink: its port, and its result once the sender closes. */
export interface Sink {
  port: number;
  result: Promise<SinkResult>;
  kill(): Promise<void>;
}

/** Starts a zc-ref-sink on `host` (default 127.0.0.1) and an ephemeral port. */
export async function startSink(host = "127.0.0.1", port = 0): Promise<Sink> {
  const program = nativeProgram("zc-ref-sink");
  if (!program) throw new Error("zc-ref-sink is not available (zig build failed)");
  const child = new LineChild([program, String(port), "--host", host], { label: "zc-ref-sink" });
  const listening = await child.nextJson<{ port: number }>(10_000).catch(async (error) => {
    await child.kill();
    throw error;
  });
  const result = child.nextJson<SinkResult>(600_000).finally(() => child.kill());
  result.catch(() => {});
  return { port: listening.port, result, kill: () => child.kill() };
}

/** What each end of zc-ref-multifd prints when done (`verified`: the receiver's only). */
export interface RefMultifdResult {
  bytes: number;
  channels: number;
  seconds: number;
  GBps: number;
  cpuSeconds: number;
  systemCpuSeconds: number;
  peakRssKiB: number;
  verified?: boolean;
}

/** How a zc-ref-multifd pair runs: `sendBufferBytes` 0 is the kernel's autotuning. */
export interface RefMultifdSettings {
  bytes: number;
  channels: number;
  hugePages: boolean;
  sendBufferBytes: number;
  /** Bytes per send and receive call: the module's packet payload. */
  chunkBytes: number;
}

/** One zc-ref-multifd transfer over loopback: both ends' results. */
export async function refMultifd(
  { bytes, channels, hugePages, sendBufferBytes, chunkBytes }: RefMultifdSettings,
  timeoutMs: number,
): Promise<{ sent: RefMultifdResult; received: RefMultifdResult }> {
  const program = nativeProgram("zc-ref-multifd");
  if (!program) throw new Error("zc-ref-multifd is not available (zig build failed)");
  const common = ["--channels", String(channels), "--chunk", String(chunkBytes), ...(hugePages ? ["--huge"] : [])];
  const receiver = new LineChild([program, "recv", String(bytes), ...common], { label: "zc-ref-multifd recv" });
  let sender: LineChild | undefined;
  try {
    const { port } = await receiver.nextJson<{ port: number }>(timeoutMs);
    sender = new LineChild(
      [program, "send", "127.0.0.1", String(port), String(bytes), ...common, "--send-buffer", String(sendBufferBytes)],
      { label: "zc-ref-multifd send" },
    );
    const [sent, received] = await Promise.all([
      sender.nextJson<RefMultifdResult>(timeoutMs),
      receiver.nextJson<RefMultifdResult>(timeoutMs),
    ]);
    return { sent, received };
  } finally {
    await Promise.all([sender?.kill(), receiver.kill()]);
  }
}
