/**
 * Multifd benchmark: a region of random data migrated over loopback, sender and receiver
 * in separate processes (bench/multifd_peer.ts) so each side's CPU and peak RSS are its
 * own, every configuration under Deno and Bun, interleaved (deno, bun, deno, bun, …).
 * With `--with-qemu`, real QEMU 7.2 and 10.0 (`--qemu-versions` picks) migrate the same
 * amount of random RAM in the same run (bench/qemu.ts): each of our 2 MiB-page cases is
 * followed at once by the matching config of each version, and the report gives per-round
 * ours/QEMU ratios against each version and against the better of the two in the round.
 *
 *   deno run -A bench/multifd.ts                 # 2 GiB, channels 1/2/4/8, zero-copy off/on, 3 reps
 *   deno run -A bench/multifd.ts --quick         # 256 MiB, a small subset, 1 rep
 *   bun bench/multifd.ts --with-qemu
 *   deno run -A bench/multifd.ts --with-qemu --qemu-versions 10.0 --channels 4
 *   deno run -A bench/multifd.ts --channels 4 --zerocopy on --huge on,off --reps 5
 *   deno run -A bench/multifd.ts --with-qemu --channels 4 --zerocopy off,on --encrypt off,aegis-128l --reps 5
 *
 * With `--with-native`, each plain case is followed in its round by its native reference
 * (zig/bench/ref_multifd.zig, runtime "native"): the same bytes over the same connections
 * and send buffer with the channel Workers' system calls and nothing else (no protocol, no
 * JS), against the same QEMU runs; the report gives ours/native per round.
 *
 * Encrypted cases (`--encrypt`) are paired with QEMU multifd + TLS (zero-copy or not: QEMU
 * has no zero-copy with TLS), and with our own plain case of the same round (same channels,
 * zero-copy and pages): "encrypted/plain" in the report.
 *
 * Default matrix: channels 1,2,4,8 × zero-copy off,on with 2 MiB pages, plus 4 channels ×
 * zero-copy off,on with 4 KiB pages, plus 4 channels zero-copy with the sender's
 * `sendBufferBytes` at 256 KiB (the same-host setting; every other case leaves it to the
 * library's default, which is that same 256 KiB with the receiver on this host; `--send-buffer
 * auto` is the kernel's autotuning, `sendBufferBytes: -1`). `--channels/--zerocopy/--huge/--send-buffer` replace it with their full
 * cross product. Records go to stdout (one JSON line each) and, unless --no-save, to
 * bench/results/<date>-multifd.{jsonl,md}; the chart to bench/results/multifd.svg.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { DEFAULT_CHART_PATH, writeChart } from "./chart.ts";
import {
  parseQemuConfig,
  parseQemuVersions,
  QEMU_CONFIGS,
  QEMU_VERSIONS,
  QemuBench,
  type QemuVersion,
  versionedConfig,
} from "./qemu.ts";
import { LineChild } from "../dev/child.ts";
import type { Cipher } from "../mod.ts";
import { type Runtime, RUNTIMES, scriptArgv } from "../dev/runtime.ts";
import { round, toHex } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { refMultifd } from "./lib/native.ts";
import { runMain } from "./lib/proc.ts";
import { threadCpuFields, type ThreadKind } from "./lib/threads.ts";
import {
  type BenchRecord,
  defaultVariant,
  encryptionSummaries,
  environment,
  markdownReport,
  multifdSummaries,
  nativeReferenceSummaries,
  packetBytes,
  pairRecords,
  pairSummaries,
  qemuSummaries,
  ResultsFiles,
  withQemuRatios,
  zeroPagesSummaries,
} from "./lib/report.ts";

export interface MultifdConfig {
  channels: number;
  zerocopy: boolean;
  /** With zerocopy: no fallback for channels whose sends the kernel copies (`zerocopyFallback: false`). */
  zerocopyAlways?: boolean;
  hugePages: boolean;
  /** The sender's `sendBufferBytes` (SO_SNDBUF); undefined: the library's default; -1: the kernel's autotuning. */
  sendBufferBytes?: number;
  /** Encrypted channels with this cipher; undefined: plain. */
  encrypt?: Cipher;
  /** The sender's `pagesPerPacket`; undefined: the default (128, 512 KiB). */
  pagesPerPacket?: number;
  /** false: the sender's `zeroPages` off (all-zero pages go as data); undefined: the default (on). */
  zeroPages?: boolean;
  /** Percent of the source's pages that are all zero (runs of that many pages in every 100); default 0. */
  zeroShare?: number;
}

/** The same-host setting of `sendBufferBytes` the suite measures beside the default. */
export const SAME_HOST_SEND_BUFFER = 256 * 1024;

export interface MultifdOptions {
  sizeBytes: number;
  reps: number;
  runtimes: readonly Runtime[];
  configs: MultifdConfig[];
  withQemu: boolean;
  /** Each plain case of ours followed in its round by the native reference (zig/bench/ref_multifd.zig). */
  withNative: boolean;
  /** Unversioned ("multifd4+zc"): each runs under every one of `qemuVersions`. */
  qemuConfigs: readonly string[];
  qemuVersions: readonly QemuVersion[];
}

const MiB = 2 ** 20;

export function defaultMultifdOptions(quick: boolean): MultifdOptions {
  const configs: MultifdConfig[] = [];
  const add = (channels: number[], zerocopy: boolean[], hugePages: boolean) => {
    for (const z of zerocopy) for (const c of channels) configs.push({ channels: c, zerocopy: z, hugePages });
  };
  if (quick) {
    add([1, 4], [false, true], true);
    add([4], [false], false);
  } else {
    add([1, 2, 4, 8], [false, true], true);
    add([4], [false, true], false);
    configs.push({ channels: 4, zerocopy: true, hugePages: true, sendBufferBytes: SAME_HOST_SEND_BUFFER });
  }
  return {
    sizeBytes: quick ? 256 * MiB : 2048 * MiB,
    reps: quick ? 1 : 3,
    runtimes: RUNTIMES,
    configs,
    withQemu: false,
    withNative: false,
    qemuConfigs: QEMU_CONFIGS,
    qemuVersions: QEMU_VERSIONS,
  };
}

const PEER = new URL("./multifd_peer.ts", import.meta.url);

/** One transfer: receiver and sender processes under `runtime`; resolves with the record. */
export async function runMultifdCase(
  runtime: Runtime,
  config: MultifdConfig,
  sizeBytes: number,
  rep = 0,
): Promise<BenchRecord> {
  const started = performance.now();
  const env = { BENCH_SECRET: toHex(crypto.getRandomValues(new Uint8Array(32))) };
  const common = ["--size", String(sizeBytes), ...(config.hugePages ? ["--huge"] : [])];
  const timeoutMs = 120_000 + sizeBytes / 20e6 * 1000; // generous: set-up at ≥ 20 MB/s
  const receiver = new LineChild(scriptArgv(runtime, PEER, ["recv", ...common]), {
    env,
    label: `${runtime} receiver`,
  });
  let sender: LineChild | undefined;
  try {
    const { port, pid } = await receiver.nextJson<{ port: number; pid: number }>(timeoutMs);
    sender = new LineChild(
      scriptArgv(runtime, PEER, [
        "send",
        ...common,
        "--port",
        String(port),
        "--channels",
        String(config.channels),
        "--peer-pid",
        String(pid),
        ...(config.zerocopy ? ["--zerocopy"] : []),
        ...(config.zerocopyAlways ? ["--zerocopy-always"] : []),
        ...(config.sendBufferBytes !== undefined ? [`--send-buffer=${config.sendBufferBytes}`] : []), // = : -1 too
        ...(config.encrypt ? ["--encrypt", config.encrypt] : []),
        ...(config.pagesPerPacket ? ["--pages-per-packet", String(config.pagesPerPacket)] : []),
        ...(config.zeroPages === false ? ["--no-zero-pages"] : []),
        ...(config.zeroShare ? ["--zero-share", String(config.zeroShare)] : []),
      ]),
      { env, label: `${runtime} sender` },
    );
    const [sent, received] = await Promise.all([
      sender.nextJson<Record<string, number | boolean>>(timeoutMs),
      receiver.nextJson<Record<string, number | boolean>>(timeoutMs),
    ]);
    const gb = Number(sent.bytes) / 1e9;
    const seconds = Number(sent.seconds);
    return {
      bench: "multifd",
      runtime,
      rep,
      ...config,
      bytes: sent.bytes,
      seconds,
      GBps: round(gb / seconds),
      senderCpuSeconds: round(Number(sent.cpuSeconds)),
      receiverCpuSeconds: round(Number(sent.peerCpuSeconds)),
      senderCpuSecondsPerGB: round(Number(sent.cpuSeconds) / gb),
      receiverCpuSecondsPerGB: round(Number(sent.peerCpuSeconds) / gb),
      senderSystemCpuSecondsPerGB: round(Number(sent.systemCpuSeconds) / gb),
      receiverSystemCpuSecondsPerGB: round(Number(sent.peerSystemCpuSeconds) / gb),
      ...(sent.cpuByThread &&
        threadCpuFields("sender", sent.cpuByThread as unknown as Record<ThreadKind, number>, Number(sent.bytes))),
      ...(sent.peerCpuByThread &&
        threadCpuFields("receiver", sent.peerCpuByThread as unknown as Record<ThreadKind, number>, Number(sent.bytes))),
      senderPeakRssMiB: Math.round(Number(sent.peakRssKiB) / 1024),
      receiverPeakRssMiB: Math.round(Number(received.peakRssKiB) / 1024),
      zerocopySends: sent.zerocopySends,
      zerocopyCopied: sent.zerocopyCopied,
      packets: sent.packets,
      setupSeconds: sent.setupSeconds,
      checksumSeconds: sent.checksumSeconds,
      verified: sent.verified === true && received.verified === true && received.bytes === sent.bytes,
      wallSeconds: round((performance.now() - started) / 1000),
    };
  } finally {
    await Promise.all([sender?.kill(), receiver.kill()]);
  }
}

/** What the native reference can stand beside: a plain case (no zero-copy, no encryption, default variants). */
export const hasNativeReference = (config: MultifdConfig) =>
  !config.zerocopy && config.encrypt === undefined && defaultVariant(config);

/**
 * The native reference of a plain case: zc-ref-multifd moves the same bytes over the same
 * number of connections with the same send buffer and the channel Workers' system calls
 * (a packet's payload per call), and nothing else (no protocol, no JS).
 * Recorded as runtime "native" with our cases' fields.
 */
export async function runNativeReferenceCase(
  config: MultifdConfig,
  sizeBytes: number,
  rep: number,
): Promise<BenchRecord> {
  const started = performance.now();
  const sendBufferBytes = config.sendBufferBytes === -1 ? 0 : config.sendBufferBytes ?? SAME_HOST_SEND_BUFFER;
  const { sent, received } = await refMultifd(
    {
      bytes: sizeBytes,
      channels: config.channels,
      hugePages: config.hugePages,
      sendBufferBytes,
      chunkBytes: packetBytes(config.pagesPerPacket),
    },
    120_000 + sizeBytes / 20e6 * 1000,
  );
  const gb = sent.bytes / 1e9;
  return {
    bench: "multifd",
    runtime: "native",
    rep,
    ...config,
    bytes: sent.bytes,
    seconds: round(sent.seconds),
    GBps: round(gb / sent.seconds),
    senderCpuSeconds: round(sent.cpuSeconds),
    receiverCpuSeconds: round(received.cpuSeconds),
    senderCpuSecondsPerGB: round(sent.cpuSeconds / gb),
    receiverCpuSecondsPerGB: round(received.cpuSeconds / gb),
    senderSystemCpuSecondsPerGB: round(sent.systemCpuSeconds / gb),
    receiverSystemCpuSecondsPerGB: round(received.systemCpuSeconds / gb),
    senderPeakRssMiB: Math.round(sent.peakRssKiB / 1024),
    receiverPeakRssMiB: Math.round(received.peakRssKiB / 1024),
    verified: received.verified === true && received.bytes === sent.bytes,
    wallSeconds: round((performance.now() - started) / 1000),
  };
}

export const configLabel = (c: MultifdConfig) =>
  `${c.channels}ch ${c.zerocopy ? c.zerocopyAlways ? "zc-always" : "zc" : "plain"} ${c.hugePages ? "2M" : "4K"}${
    c.sendBufferBytes === -1 ? " sndbuf auto" : c.sendBufferBytes ? ` sndbuf ${c.sendBufferBytes / 1024} KiB` : ""
  }${c.encrypt ? ` ${c.encrypt}` : ""}${c.zeroPages === false ? " no-zero-pages" : ""}${
    c.zeroShare ? ` ${c.zeroShare}% zero` : ""
  }`;

/**
 * Runs the whole multifd matrix (and QEMU, if asked), interleaved: per repetition, every
 * configuration under each runtime in turn, each of our 2 MiB-page runs followed at once by
 * the matching QEMU config of every version (their order alternating), then the QEMU
 * configurations no case of ours matched. Every record goes to `emit` as it is made. A
 * failed case is emitted as a record with `error` and skipped.
 */
export async function runMultifdSuite(
  options: MultifdOptions,
  emit: (record: BenchRecord) => void,
): Promise<Record<string, string>> {
  const notes: Record<string, string> = {};
  let qemu: QemuBench | undefined;
  if (options.withQemu) {
    const prepared = await QemuBench.prepare(options.sizeBytes, options.qemuVersions);
    if (typeof prepared === "string") {
      notes.QEMU = `comparison skipped: ${prepared}`;
      note(`multifd: QEMU comparison skipped: ${prepared}`);
    } else {
      qemu = prepared;
      notes["free-page reporting"] = qemu.pageReporting;
      for (const version of options.qemuVersions) {
        if (!qemu.versions.includes(version)) {
          notes[`QEMU ${version}`] = `skipped: ${qemu.skipped[version]}`;
          continue;
        }
        const [source, destination] = qemu.commandLines(version);
        Object.assign(notes, {
          [`QEMU ${version}`]: qemu.versionLine(version),
          [`QEMU ${version} source`]: `\`${source}\``,
          [`QEMU ${version} destination`]: `\`${destination}\``,
        });
      }
    }
  }
  const runQemu = async (config: string, rep: number): Promise<BenchRecord> => {
    note(`multifd: rep ${rep + 1}/${options.reps} QEMU ${config}`);
    try {
      const record = await qemu!.run(config, rep);
      emit(record);
      return record;
    } catch (error) {
      const { version } = parseQemuConfig(config);
      const record = { bench: "qemu", config, qemuVersion: version, rep, error: (error as Error).message };
      emit(record);
      return record;
    }
  };
  try {
    for (let rep = 0; rep < options.reps; rep++) {
      const paired = new Set<string>();
      for (const config of options.configs) {
        // The QEMU runs to compare with, right after ours (this VM drifts within minutes:
        // only a ratio taken inside one round compares): same channels and zero-copy, 2 MiB
        // pages; encrypted against TLS (which QEMU runs without zero-copy only).
        const partner = `multifd${config.channels}${config.encrypt ? "+tls" : config.zerocopy ? "+zc" : ""}`;
        const pairs = qemu && config.hugePages && defaultVariant(config) && options.qemuConfigs.includes(partner);
        let theirs: BenchRecord[] = []; // the QEMU runs of this case's last runtime
        for (const runtime of options.runtimes) {
          note(`multifd: rep ${rep + 1}/${options.reps} ${configLabel(config)} ${runtime}`);
          let ours: BenchRecord;
          try {
            ours = await runMultifdCase(runtime, config, options.sizeBytes, rep);
          } catch (error) {
            ours = { bench: "multifd", runtime, rep, ...config, error: (error as Error).message };
          }
          emit(ours);
          if (!pairs) continue;
          paired.add(partner);
          // The versions' order flips by round and by runtime: neither always runs first.
          const flip = (rep + options.runtimes.indexOf(runtime)) % 2 === 1;
          const versions = flip ? [...qemu!.versions].reverse() : qemu!.versions;
          theirs = [];
          for (const version of versions) theirs.push(await runQemu(versionedConfig(version, partner), rep));
          for (const pair of pairRecords(ours, theirs)) emit(pair);
        }
        if (options.withNative && hasNativeReference(config)) {
          note(`multifd: rep ${rep + 1}/${options.reps} ${configLabel(config)} native reference`);
          let reference: BenchRecord;
          try {
            reference = await runNativeReferenceCase(config, options.sizeBytes, rep);
          } catch (error) {
            reference = { bench: "multifd", runtime: "native", rep, ...config, error: (error as Error).message };
          }
          emit(reference);
          // Against the QEMU runs just before it, in the same round.
          for (const pair of pairRecords(reference, theirs)) emit(pair);
        }
      }
      for (const config of qemu ? options.qemuConfigs : []) {
        if (paired.has(config)) continue;
        for (const version of qemu!.versions) await runQemu(versionedConfig(version, config), rep);
      }
    }
  } finally {
    qemu?.close();
  }
  return notes;
}

const USAGE =
  `usage: multifd.ts [--quick] [--with-qemu] [--qemu-versions 7.2,10.0] [--with-native] [--size-mib N] [--reps N]
                  [--runtimes deno,bun] [--channels 1,2,4,8] [--zerocopy off,on,always] [--huge on,off]
                  [--send-buffer default,auto,262144] [--encrypt off,aegis-128l,aes-256-gcm]
                  [--pages-per-packet default,512] [--zero-pages on,off] [--zero-share 0,50] [--no-save]`;

function list(text: string | undefined, parse: (item: string) => unknown): unknown[] | undefined {
  return text === undefined ? undefined : text.split(",").map((item) => parse(item.trim()));
}

function onOff(item: string): boolean {
  if (item !== "on" && item !== "off") throw new Error(`expected on or off, got "${item}"`);
  return item === "on";
}

/** --zerocopy values: off, on, always (on without the fallback where the kernel copies). */
function zerocopySetting(item: string): { zerocopy: boolean; zerocopyAlways?: boolean } {
  if (item === "always") return { zerocopy: true, zerocopyAlways: true };
  return { zerocopy: onOff(item) };
}

/** --encrypt values: off (plain), or a cipher. */
function cipherSetting(item: string): Cipher | undefined {
  if (item === "off") return undefined;
  if (item !== "aegis-128l" && item !== "aes-256-gcm") throw new Error(`expected off or a cipher, got "${item}"`);
  return item;
}

class HelpRequested extends Error {}

export function parseMultifdArgs(args: string[]): MultifdOptions & { save: boolean; quick: boolean } {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      "with-qemu": { type: "boolean", default: false },
      "with-native": { type: "boolean", default: false },
      "qemu-versions": { type: "string" },
      "size-mib": { type: "string" },
      reps: { type: "string" },
      runtimes: { type: "string" },
      channels: { type: "string" },
      zerocopy: { type: "string" },
      huge: { type: "string" },
      "send-buffer": { type: "string" },
      "pages-per-packet": { type: "string" },
      "zero-pages": { type: "string" },
      "zero-share": { type: "string" },
      encrypt: { type: "string" },
      "no-save": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) throw new HelpRequested();
  const options = defaultMultifdOptions(values.quick);
  if (values["size-mib"] !== undefined) options.sizeBytes = Math.round(Number(values["size-mib"]) * MiB);
  if (values.reps !== undefined) options.reps = Number(values.reps);
  const runtimes = list(values.runtimes, (r) => {
    if (!RUNTIMES.includes(r as Runtime)) throw new Error(`unknown runtime "${r}"`);
    return r;
  });
  if (runtimes) options.runtimes = runtimes as Runtime[];
  const matrix = [
    "channels",
    "zerocopy",
    "huge",
    "send-buffer",
    "encrypt",
    "pages-per-packet",
    "zero-pages",
    "zero-share",
  ] as const;
  if (matrix.some((name) => values[name] !== undefined)) {
    const channels = (list(values.channels, Number) ?? [1, 2, 4, 8]) as number[];
    const zerocopy =
      (list(values.zerocopy, zerocopySetting) ?? [{ zerocopy: false }, { zerocopy: true }]) as ReturnType<
        typeof zerocopySetting
      >[];
    const huge = (list(values.huge, onOff) ?? [true]) as boolean[];
    const sendBuffers = (list(values["send-buffer"], (b) =>
      b === "default" ? undefined : b === "auto" ? -1 : Number(b)) ??
      [undefined]) as (number | undefined)[];
    const ciphers = (list(values.encrypt, cipherSetting) ?? [undefined]) as (Cipher | undefined)[];
    const packetSizes = (list(values["pages-per-packet"], (p) => p === "default" ? undefined : Number(p)) ??
      [undefined]) as (number | undefined)[];
    const zeroPages = (list(values["zero-pages"], onOff) ?? [true]) as boolean[];
    const zeroShares = (list(values["zero-share"], (p) => {
      const share = Number(p);
      if (!Number.isInteger(share) || share < 0 || share > 100) throw new Error(`--zero-share: 0..100, got "${p}"`);
      return share;
    }) ?? [0]) as number[];
    // Ciphers, packet sizes and the zero-page variants innermost: a variant runs right after the
    // case it is compared with.
    options.configs = sendBuffers.flatMap((sendBufferBytes) =>
      huge.flatMap((h) =>
        zerocopy.flatMap((z) =>
          channels.flatMap((c) =>
            ciphers.flatMap((encrypt) =>
              packetSizes.flatMap((pagesPerPacket) =>
                zeroShares.flatMap((zeroShare) =>
                  zeroPages.map((zero) => ({
                    channels: c,
                    ...z,
                    hugePages: h,
                    sendBufferBytes,
                    ...(encrypt && { encrypt }),
                    ...(pagesPerPacket && { pagesPerPacket }),
                    ...(!zero && { zeroPages: false }),
                    ...(zeroShare && { zeroShare }),
                  }))
                )
              )
            )
          )
        )
      )
    );
  }
  if (
    !(options.sizeBytes >= MiB) || !Number.isInteger(options.reps) || options.reps < 1 ||
    options.configs.some((c) => !Number.isInteger(c.channels) || c.channels < 1 || c.channels > 64)
  ) {
    throw new Error("bad --size-mib, --reps or --channels");
  }
  options.withQemu = values["with-qemu"];
  options.withNative = values["with-native"];
  if (values["qemu-versions"] !== undefined) options.qemuVersions = parseQemuVersions(values["qemu-versions"]);
  return { ...options, save: !values["no-save"], quick: values.quick };
}

async function main(): Promise<number> {
  let options;
  try {
    options = parseMultifdArgs(process.argv.slice(2));
  } catch (error) {
    if (error instanceof HelpRequested) return out(USAGE), 0;
    note(`multifd.ts: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const env = environment({
    "region size": `${options.sizeBytes / MiB} MiB of random data`,
    repetitions: String(options.reps),
  });
  const files = options.save ? new ResultsFiles("multifd") : undefined;
  const records: BenchRecord[] = [];
  const emit = (record: BenchRecord) => {
    records.push(record);
    files?.append(record);
    out(JSON.stringify(record));
  };
  const notes = await runMultifdSuite(options, emit);
  const sums = withQemuRatios([
    ...multifdSummaries(records),
    ...qemuSummaries(records),
    ...pairSummaries(records),
    ...nativeReferenceSummaries(records),
    ...encryptionSummaries(records),
    ...zeroPagesSummaries(records),
  ]);
  for (const s of sums) emit(s);
  Object.assign(env, notes);
  const report = markdownReport("Multifd benchmark", env, sums);
  out("\n" + report);
  if (files) {
    files.writeMarkdown(report);
    const chart = writeChart(records, options.quick ? DEFAULT_CHART_PATH.replace(/\.svg$/, "-quick.svg") : undefined);
    note(`multifd: results in ${files.jsonlPath} and ${files.markdownPath}${chart ? `; chart ${chart}` : ""}`);
  }
  return records.some((r) => r.error !== undefined || r.verified === false) ? 1 : 0;
}

if (import.meta.main) await runMain("multifd.ts", main);
