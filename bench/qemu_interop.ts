/**
 * Ours on either end of a real QEMU migration against QEMU on that end, interleaved round
 * by round (this VM drifts, so only ratios inside a round compare; the README quotes the
 * medians of those ratios).
 *
 *   deno run -A bench/qemu_interop.ts [--rounds 5] [--size-mib 2048] [--channels 4]
 *       [--runtimes deno,bun] [--versions 7.2,10.0] [--directions recv,send] [--zerocopy off,on]
 *       [--also-library PATH] [--zero-percent P]
 *
 * Set-up: bench/qemu.ts's (guest RAM = a random image on a private `huge=always` tmpfs,
 * `-machine none`, paused, the source's RAM locked, multifd with N channels, no bandwidth
 * limit); our output directories are on the same tmpfs.
 * - **recv** — ours as the destination. A QEMU source migrates into
 *   `migrate.ts qemu-recv --out DIR` (new files: pages allocated and zeroed as they arrive),
 *   and in the same round into a QEMU destination of the same version, twice: "fresh" (a
 *   newly started destination's RAM, QEMU's default prealloc=off — the same work as our new
 *   files) and "prealloc" (RAM allocated and zeroed before the clock, bench/qemu.ts's
 *   default). Clock: `migrate` to the later of the source's `completed` and the
 *   destination's end (QEMU: its `completed` event; ours: its JSON result line).
 * - **send** — ours as the source. `migrate.ts qemu-send --from DIR` (DIR = what qemu-recv
 *   received from this QEMU version in the warm-up) into a QEMU destination (prealloc),
 *   against a QEMU source into the same kind of destination. Clock: ours from spawning the
 *   command (the runtime's start-up counts: that is what a user runs), QEMU from `migrate`
 *   (its VM is running already), to the destination's `completed`. Also on the library's own
 *   clocks: `callSeconds`, `QemuMigrationSender.send` from its call to its last byte written
 *   (connects and Worker start included: what a program embedding the library waits), and
 *   `ownSeconds`, its data phase alone (from the first packet round to the last byte).
 * - `--zerocopy on`: the source sends with zero-copy (QEMU `zero-copy-send`, ours
 *   `--zerocopy`); in recv it is the QEMU source's setting for both destinations.
 * - `--also-library PATH`: every round also runs ours with another build, so two builds
 *   compare inside the same rounds; the report adds this build / that one. PATH is a build of
 *   the native library (`ZEROCOPY_MULTIFD_LIB=PATH`, e.g. an older commit's `zig-out/lib/…so`,
 *   with this checkout's TypeScript), or another checkout's directory (e.g. a `git worktree`
 *   of an older commit, built: its `examples/migrate.ts`, its TypeScript and its library).
 * - `--zero-percent P`: the guest's last P% of RAM all zeros (a mostly idle guest), as zero
 *   pages for both sources: QEMU ≥ 9.0's destination skips those it never received; ours
 *   leaves them as holes of its sparse block file.
 * GB/s = RAM bytes / that time. CPU s/GB: every thread of the process on our end against the
 * QEMU process on that end, over the same window. recv: `migrate` to completion for both (ours:
 * its CPU read from /proc at `migrate`, subtracted from the `processCpuSeconds` of its `--json`;
 * what it spent before, starting and waiting for QEMU, is `commandCpuSeconds − cpuSeconds`, as
 * a QEMU destination's start is not counted either), also split by kind of thread
 * (bench/lib/threads.ts), and both destinations' kernel part (ours: `processSystemCpuSeconds`).
 * send: ours during its command (`cpuSeconds`: runtime start-up
 * excluded), QEMU's source from `migrate`. Every run is verified: the RAM that arrived is
 * byte-identical to the source image. The order of the cases rotates from round to round; one
 * warm-up receive per version first (not counted: it also makes the send direction's directory).
 * Needs root (tmpfs, mem-lock, apt). Results: bench/results/<timestamp>-qemu-interop.{jsonl,md}.
 * @module
 */
import { existsSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { LIBRARY_ENV } from "../ffi/library_path.ts";
import { LineChild } from "../dev/child.ts";
import { ROOT } from "../dev/root.ts";
import { currentRuntime, type Runtime, RUNTIMES, scriptArgv } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { cpuTimesOf, runMain } from "./lib/proc.ts";
import { ThreadCpu, threadCpuFields } from "./lib/threads.ts";
import {
  type BenchRecord,
  environment,
  formatSpread,
  groupBy,
  markdownTable,
  medianCell,
  ResultsFiles,
  spread,
  threadCpuCell,
} from "./lib/report.ts";
import {
  parseQemuConfig,
  parseQemuVersions,
  QEMU_VERSIONS,
  QemuBench,
  type QemuSide,
  type QemuVersion,
} from "./qemu.ts";

const CLI = `${ROOT}examples/migrate.ts`;
type Direction = "recv" | "send";

interface Settings {
  size: number;
  channels: number;
}

/** One case of a round: ours under a runtime, or QEMU on our end. */
interface Case {
  label: string;
  run(): Promise<BenchRecord>;
}

const seconds = (from: number) => (performance.now() - from) / 1000;

/**
 * Which run of ours: the runtime, the QEMU version on the other end, zero-copy, size and
 * channels; `library`: another build of the native library than this checkout's (--also-library).
 */
interface OurRun {
  direction: Direction;
  runtime: Runtime;
  version: QemuVersion;
  zerocopy: boolean;
  settings: Settings;
  library?: string;
}

/** A run of ours as its case is labelled: the runtime, marked when it loads the other library. */
const ourLabel = (runtime: Runtime, library?: string) => library ? `${runtime}, --also-library` : runtime;

/** Whether --also-library names another checkout (a directory) rather than a library file. */
const isCheckout = (path: string) => statSync(path).isDirectory();

/** The CLI a run of ours starts: this checkout's, or the other checkout's (--also-library DIR). */
const cliOf = ({ library }: OurRun) => library && isCheckout(library) ? join(library, "examples/migrate.ts") : CLI;

/** How a run of ours is spawned: its label, and another library's path in its environment. */
const childOptions = ({ runtime, library }: OurRun, command: string) => ({
  label: `${command} (${ourLabel(runtime, library)})`,
  env: library && !isCheckout(library) ? { [LIBRARY_ENV]: library } : {},
});

/**
 * What a run of ours records: `ours` is the CLI's JSON result, `cpu` our process's CPU seconds
 * in the window QEMU's are measured over, `peerCpu` the QEMU process's on the other end.
 */
function oursRecord(
  { direction, runtime, version, zerocopy, settings: { size, channels }, library }: OurRun,
  e2eSeconds: number,
  ours: Record<string, unknown>,
  cpu: number,
  peerCpu: number,
): BenchRecord {
  const gb = size / 1e9;
  return {
    bench: "qemu-interop",
    direction,
    side: "ours",
    runtime,
    ...(library ? { library } : {}),
    qemuVersion: version,
    zerocopy,
    channels,
    bytes: size,
    e2eSeconds: round(e2eSeconds),
    GBps: round(gb / e2eSeconds),
    ownSeconds: ours.seconds,
    cpuSeconds: round(cpu),
    cpuSecondsPerGB: round(cpu / gb),
    commandCpuSeconds: ours.cpuSeconds,
    peerCpuSecondsPerGB: round(peerCpu / gb),
  };
}

/**
 * A destination's two clocks, from `migrate`: when the source reported `completed` (it has
 * written everything: how fast the destination took the data) and how long after that the
 * destination was done (a QEMU destination: its own `completed`; ours: its JSON result).
 */
function sourceCompletion(sourceSeconds: number, doneSeconds: number): BenchRecord {
  return { sourceSeconds: round(sourceSeconds), doneAfterSourceMs: round((doneSeconds - sourceSeconds) * 1000, 1) };
}

/** QEMU → `qemu-recv` into `out` (removed afterwards unless `keep`): the record of one receive. */
async function oursReceive(
  qemu: QemuBench,
  version: QemuVersion,
  runtime: Runtime,
  zerocopy: boolean,
  out: string,
  { size, channels }: Settings,
  keep = false,
  library?: string,
): Promise<BenchRecord> {
  const run: OurRun = { direction: "recv", runtime, version, zerocopy, settings: { size, channels }, library };
  rmSync(out, { recursive: true, force: true });
  const recv = new LineChild(
    scriptArgv(runtime, cliOf(run), [
      "qemu-recv",
      "--listen",
      "127.0.0.1:0",
      "--out",
      out,
      "--channels",
      String(channels),
      "--json",
    ]),
    childOptions(run, "qemu-recv"),
  );
  let src: QemuSide | undefined;
  const threads = new ThreadCpu(recv.pid);
  try {
    const port = Number((await recv.waitFor(/listening on \S+:(\d+):/, "stderr"))[1]);
    src = await qemu.start("src", `${version} multifd${channels}${zerocopy ? "+zc" : ""}`);
    const source = src;
    await qemu.warmFreeMemory(); // as before a fresh QEMU destination (qemuToQemu)
    const cpu0 = source.cpuSeconds();
    const oursCpu0 = cpuTimesOf(recv.pid);
    threads.start();
    const started = performance.now();
    await source.qmp.command("migrate", { uri: `tcp:127.0.0.1:${port}` });
    const [sourceSeconds, [ours, oursSeconds, byThread]] = await Promise.all([
      source.qmp.migrationCompleted().then(() => seconds(started)),
      recv.nextJson().then((result) => [result, seconds(started), threads.stop()] as const),
    ]);
    const e2eSeconds = Math.max(sourceSeconds, oursSeconds);
    const srcCpu = source.cpuSeconds() - cpu0;
    await source.quit();
    const blocks = ours.blocks as { file: string }[];
    return {
      ...oursRecord(run, e2eSeconds, ours, Number(ours.processCpuSeconds) - oursCpu0.total, srcCpu),
      ...threadCpuFields("", byThread, size),
      ...sourceCompletion(sourceSeconds, oursSeconds),
      systemCpuSecondsPerGB: round((Number(ours.processSystemCpuSeconds) - oursCpu0.system) / (size / 1e9)),
      verified: ours.ok === true && blocks.length === 1 && await qemu.matchesSource(blocks[0].file),
    };
  } finally {
    threads.stop(); // a no-op when stopped already; ends the sampling when the run failed
    await src?.kill();
    await recv.kill();
    if (!keep) rmSync(out, { recursive: true, force: true });
  }
}

/** `qemu-send --from dir` → a QEMU destination: the record of one send. */
async function oursSend(
  qemu: QemuBench,
  version: QemuVersion,
  runtime: Runtime,
  zerocopy: boolean,
  dir: string,
  { size, channels }: Settings,
  library?: string,
): Promise<BenchRecord> {
  const run: OurRun = { direction: "send", runtime, version, zerocopy, settings: { size, channels }, library };
  const dst = await qemu.start("dst", `${version} multifd${channels}`);
  let send: LineChild | undefined;
  try {
    const cpu0 = dst.cpuSeconds();
    const started = performance.now();
    send = new LineChild(
      scriptArgv(runtime, cliOf(run), [
        "qemu-send",
        "--to",
        `127.0.0.1:${dst.port}`,
        "--from",
        dir,
        "--channels",
        String(channels),
        ...(zerocopy ? ["--zerocopy"] : []),
        "--json",
      ]),
      childOptions(run, "qemu-send"),
    );
    const [e2eSeconds, ours] = await Promise.all([
      dst.qmp.migrationCompleted().then(() => seconds(started)),
      send.nextJson(),
    ]);
    const dstCpu = dst.cpuSeconds() - cpu0;
    // The library's call: its set-up (connects, Worker start) and its data phase.
    const callSeconds = Number(ours.setupSeconds) + Number(ours.seconds);
    const status = (await dst.qmp.command<{ status: string }>("query-status")).status;
    await dst.quit();
    return {
      ...oursRecord(run, e2eSeconds, ours, Number(ours.cpuSeconds), dstCpu),
      // The RAM's bytes over the data phase (the sender's own GBps counts only the bytes it
      // wrote: zero pages go as offsets).
      ownGBps: round(size / 1e9 / Number(ours.seconds)),
      callSeconds: round(callSeconds),
      callGBps: round(size / 1e9 / callSeconds),
      destinationStatus: status,
      verified: ours.ok === true && await qemu.matchesSource(qemu.destinationImage),
    };
  } finally {
    await send?.kill();
    await dst.kill();
  }
}

/** QEMU → QEMU, as the reference of `direction`: the same fields as ours, from QEMU's side on our end. */
async function qemuToQemu(
  qemu: QemuBench,
  version: QemuVersion,
  direction: Direction,
  config: string,
  { size }: Settings,
): Promise<BenchRecord> {
  const fresh = parseQemuConfig(config).fresh;
  const r = await qemu.run(`${version} ${config}`, 0, fresh ? () => qemu.warmFreeMemory() : undefined);
  const ourEnd = direction === "recv" ? "dst" : "src";
  const peerEnd = direction === "recv" ? "src" : "dst";
  const e2eSeconds = Number(r.e2eSeconds);
  return {
    bench: "qemu-interop",
    direction,
    side: "qemu",
    config,
    qemuVersion: version,
    zerocopy: r.zerocopy,
    channels: r.channels,
    bytes: size,
    e2eSeconds,
    GBps: round(size / 1e9 / e2eSeconds),
    totalTimeGBps: r.GBps,
    cpuSeconds: r[`${ourEnd}CpuSeconds`],
    cpuSecondsPerGB: r[`${ourEnd}CpuSecondsPerGB`],
    systemCpuSecondsPerGB: r[`${ourEnd}SystemCpuSecondsPerGB`],
    ...(direction === "recv" ? sourceCompletion(Number(r.srcCompletedSeconds), e2eSeconds) : {}),
    peerCpuSecondsPerGB: r[`${peerEnd}CpuSecondsPerGB`],
    verified: r.verified,
  };
}

/** The cases of a round for one version, direction and zero-copy setting. */
function casesOf(
  qemu: QemuBench,
  version: QemuVersion,
  direction: Direction,
  zerocopy: boolean,
  runtimes: Runtime[],
  archive: string,
  settings: Settings,
  alsoLibrary?: string,
): Case[] {
  const base = `multifd${settings.channels}${zerocopy ? "+zc" : ""}`;
  const libraries = alsoLibrary ? [undefined, alsoLibrary] : [undefined];
  const ours = runtimes.flatMap((runtime) =>
    libraries.map((library) => ({
      label: ourLabel(runtime, library),
      run: () =>
        direction === "recv"
          ? oursReceive(qemu, version, runtime, zerocopy, qemu.scratch("received"), settings, false, library)
          : oursSend(qemu, version, runtime, zerocopy, archive, settings, library),
    }))
  );
  const references = direction === "recv"
    ? [
      { label: "qemu fresh", run: () => qemuToQemu(qemu, version, direction, `${base}+fresh`, settings) },
      { label: "qemu prealloc", run: () => qemuToQemu(qemu, version, direction, base, settings) },
    ]
    : [{ label: "qemu", run: () => qemuToQemu(qemu, version, direction, base, settings) }];
  return [...ours, ...references];
}

const rotate = <T>(items: T[], by: number) => items.map((_, i) => items[(i + by) % items.length]);

function report(records: BenchRecord[], settings: Settings, rounds: number, env: Record<string, string>): string {
  const results = records.filter((r) => r.bench === "qemu-interop");
  const ratios = records.filter((r) => r.bench === "qemu-interop-round");
  const numbers = (values: unknown[]) => values.filter((v): v is number => typeof v === "number");
  const cell = (values: unknown[], digits = 2) => formatSpread(spread(numbers(values)), digits);
  const groups = new Map<string, BenchRecord[]>();
  for (const r of results) {
    const key = `${r.direction}|${r.qemuVersion}|${r.zerocopy}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const rows = (direction: Direction) => {
    const lines: string[][] = [];
    for (const [key, group] of groups) {
      if (!key.startsWith(`${direction}|`)) continue;
      const [, version, zerocopy] = key.split("|");
      const qemuRuns = (label: string) => group.filter((r) => r.side === "qemu" && r.label === label);
      const references = direction === "recv" ? ["qemu fresh", "qemu prealloc"] : ["qemu"];
      for (const label of new Set(group.filter((r) => r.side === "ours").map((r) => r.label as string))) {
        const mine = group.filter((r) => r.side === "ours" && r.label === label);
        const roundRatios = ratios.filter((r) =>
          r.direction === direction && r.qemuVersion === version && String(r.zerocopy) === zerocopy &&
          r.label === label
        );
        lines.push([
          version,
          zerocopy === "true" ? "zero-copy" : "plain",
          label,
          cell(mine.map((r) => r.GBps)),
          ...references.map((label) => cell(qemuRuns(label).map((r) => r.GBps))),
          ...references.map((label) => `**${cell(roundRatios.map((r) => r[`vs ${label}`]))}**`),
          ...(direction === "send"
            ? [cell(roundRatios.map((r) => r["call vs qemu"])), cell(roundRatios.map((r) => r["data vs qemu"]))]
            : [
              cell(roundRatios.map((r) => r["source vs qemu fresh"])),
              `${cell(mine.map((r) => r.doneAfterSourceMs), 0)} / ${
                cell(qemuRuns("qemu fresh").map((r) => r.doneAfterSourceMs), 0)
              }`,
            ]),
          cell(mine.map((r) => r.cpuSecondsPerGB), 3),
          ...(direction === "recv"
            ? [
              threadCpuCell(mine, ""), // medians only: three spreads in one cell would not read
              `${medianCell(mine, "systemCpuSecondsPerGB")} / ${
                medianCell(qemuRuns("qemu fresh"), "systemCpuSecondsPerGB")
              }`,
            ]
            : []),
          ...references.map((label) => cell(qemuRuns(label).map((r) => r.cpuSecondsPerGB), 3)),
        ]);
      }
    }
    return lines;
  };
  const failed = results.filter((r) => r.verified !== true).length;
  return [
    `# QEMU interop: ours against QEMU on the same end of a real QEMU migration`,
    "",
    ...Object.entries(env).map(([k, v]) => `- ${k}: ${v}`),
    "",
    `${settings.size / 2 ** 20} MiB of random guest RAM on 2 MiB pages, multifd ${settings.channels} channels, ` +
    `${rounds} interleaved rounds; median (min–max); ratios taken inside each round (> 1: ours is faster).`,
    "",
    "## Ours as the destination (QEMU → qemu-recv against QEMU → QEMU)",
    "",
    markdownTable(
      [
        "QEMU",
        "source",
        "ours",
        "ours GB/s",
        "QEMU fresh dst GB/s",
        "QEMU prealloc dst GB/s",
        "ours / fresh",
        "ours / prealloc",
        "the source's completion: ours / fresh",
        "done after it (ms): ours / fresh",
        "ours CPU s/GB",
        "of which Workers / JS engine / main",
        "in the kernel: ours / fresh dst",
        "fresh dst CPU s/GB",
        "prealloc dst CPU s/GB",
      ],
      rows("recv"),
    ),
    "",
    "Clock: `migrate` → source completed and destination done (ours: its JSON result). The source's " +
    "completion: how soon the source had written everything into ours against into a fresh QEMU destination, " +
    "inside each round (> 1: sooner into ours), and how long after it each destination was done. Fresh: a newly " +
    "started destination (prealloc off) allocates and zeroes its RAM during the migration, as qemu-recv's new " +
    "files are; prealloc: bench/qemu.ts's default, RAM ready before the clock. CPU: the destination process, " +
    "every thread, from `migrate` to its end (ours: what it spent before, starting its Workers and waiting, is " +
    "`commandCpuSeconds` in the JSON lines). Of which (medians, bench/lib/threads.ts): its Worker threads (the " +
    "channels' and the reactor's), the JS engine's background threads (compilers, GC), the main thread and the " +
    "runtime's others; a QEMU destination has no JS engine. In the kernel (medians): the system part of that " +
    "CPU, of the whole process on both ends (ours: `processSystemCpuSeconds` of its JSON, less /proc's at " +
    "`migrate`): the copy out of the sockets and the zeroing of new pages, which neither side's code avoids, and " +
    "what its way of calling the kernel adds.",
    "",
    "## Ours as the source (qemu-send → QEMU against QEMU → QEMU)",
    "",
    markdownTable(
      [
        "QEMU",
        "source",
        "ours",
        "ours GB/s",
        "QEMU src GB/s",
        "ours / QEMU",
        "the library's call / QEMU",
        "data phase / QEMU",
        "ours CPU s/GB",
        "QEMU src CPU s/GB",
      ],
      rows("send"),
    ),
    "",
    "Clock: ours from spawning `qemu-send` (runtime start-up included), QEMU from `migrate`, to the " +
    "destination's `completed`; the destination is QEMU (prealloc) in both. The library's call: the same " +
    "transfer on `QemuMigrationSender.send`'s own clock, from its call to its last byte written (the connects and " +
    "the channel Workers' start included, no process start-up), as a program that embeds the library waits. Data " +
    "phase: from its first packet round (channels connected, Workers started) to its last byte.",
    ...alsoLibraryReport(ratios, env),
    ...(failed ? ["", `${failed} run(s) failed or not verified (see the .jsonl).`] : []),
  ].join("\n");
}

/** With --also-library: this build against the other, inside each round (GB/s and CPU per GB). */
function alsoLibraryReport(ratios: BenchRecord[], env: Record<string, string>): string[] {
  const compared = ratios.filter((r) => typeof r["vs --also-library"] === "number");
  if (compared.length === 0) return [];
  const cases = groupBy(compared, (r) => `${r.direction}|${r.qemuVersion}|${r.zerocopy}|${r.runtime}`);
  const lines = [...cases].map(([key, mine]) => {
    const [direction, version, zerocopy, runtime] = key.split("|");
    const cell = (field: string) => formatSpread(spread(mine.map((r) => Number(r[field]))), 2);
    return [
      direction === "recv" ? "destination" : "source",
      version,
      zerocopy === "true" ? "zero-copy" : "plain",
      runtime,
      `**${cell("vs --also-library")}**`,
      cell("CPU vs --also-library"),
    ];
  });
  return [
    "",
    `## This build against \`--also-library\` (${env["also-library"]})`,
    "",
    markdownTable(["ours as", "QEMU", "source", "runtime", "GB/s: this / that", "CPU s/GB: this / that"], lines),
    "",
    "Both runs of ours in the same round, against the same QEMU; ratios taken inside each round (> 1: this " +
    "build is faster, or spends more CPU).",
  ];
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string", default: "5" },
      "size-mib": { type: "string", default: "2048" },
      "zero-percent": { type: "string", default: "0" },
      channels: { type: "string", default: "4" },
      runtimes: { type: "string", default: currentRuntime },
      versions: { type: "string", default: QEMU_VERSIONS.join(",") },
      directions: { type: "string", default: "recv,send" },
      zerocopy: { type: "string", default: "off" },
      "also-library": { type: "string" },
    },
    strict: true,
  });
  const list = (text: string) => text.split(",").map((v) => v.trim()).filter(Boolean);
  const rounds = Number(values.rounds);
  const settings: Settings = { size: Number(values["size-mib"]) * 2 ** 20, channels: Number(values.channels) };
  const runtimes = list(values.runtimes) as Runtime[];
  if (runtimes.length === 0 || runtimes.some((r) => !RUNTIMES.includes(r))) {
    throw new Error(`--runtimes: ${RUNTIMES.join(",")}`);
  }
  const directions = list(values.directions) as Direction[];
  if (directions.length === 0 || directions.some((d) => d !== "recv" && d !== "send")) {
    throw new Error("--directions: recv,send");
  }
  const zerocopyModes = list(values.zerocopy).map((z) => {
    if (z !== "off" && z !== "on") throw new Error("--zerocopy: off,on");
    return z === "on";
  });
  const versions = parseQemuVersions(values.versions);
  const alsoLibrary = values["also-library"] === undefined ? undefined : resolve(values["also-library"]);
  if (alsoLibrary !== undefined && !existsSync(alsoLibrary)) throw new Error(`--also-library: no ${alsoLibrary}`);
  if (!(rounds >= 1) || !(settings.size > 0) || !(settings.channels >= 1)) {
    throw new Error("--rounds, --size-mib, --channels: positive numbers");
  }

  // Room on the tmpfs: a received directory per run, one kept per version for sending, and
  // the memory warmed before each fresh destination (QemuBench.warmFreeMemory).
  const zeroPercent = Number(values["zero-percent"]);
  if (!(zeroPercent >= 0 && zeroPercent <= 100)) throw new Error("--zero-percent: 0 to 100");
  const qemu = await QemuBench.prepare(settings.size, versions, 2 + versions.length, zeroPercent);
  if (typeof qemu === "string") {
    note(`qemu_interop: QEMU skipped: ${qemu}`);
    return 1;
  }
  const files = new ResultsFiles("qemu-interop");
  const records: BenchRecord[] = [];
  const emit = (record: BenchRecord) => {
    records.push(record);
    files.append(record);
    out(JSON.stringify(record));
  };
  const env = environment({
    command: `deno run -A bench/qemu_interop.ts ${process.argv.slice(2).join(" ")}`.trim(),
    qemu: qemu.versions.map((v) => qemu.versionLine(v)).join("; "),
    "free-page reporting": qemu.pageReporting,
    ...(alsoLibrary ? { "also-library": alsoLibrary } : {}),
    ...(zeroPercent > 0 ? { "guest RAM": `its last ${zeroPercent}% all zeros (--zero-percent)` } : {}),
  });
  try {
    const archives = new Map<QemuVersion, string>();
    for (const version of qemu.versions) {
      const dir = qemu.scratch(`archive-${version}`);
      const warmUp = await oursReceive(qemu, version, runtimes[0], false, dir, settings, true);
      if (warmUp.verified !== true) throw new Error(`the warm-up receive from QEMU ${version} failed`);
      note(`qemu_interop: ${version} warm-up receive ${warmUp.GBps} GB/s (not counted; kept for sending)`);
      archives.set(version, dir);
    }
    for (let round_ = 0; round_ < rounds; round_++) {
      for (const version of qemu.versions) {
        for (const direction of directions) {
          for (const zerocopy of zerocopyModes) {
            const cases = casesOf(
              qemu,
              version,
              direction,
              zerocopy,
              runtimes,
              archives.get(version)!,
              settings,
              alsoLibrary,
            );
            const got = new Map<string, BenchRecord>();
            for (const c of rotate(cases, round_)) {
              const record = { round: round_, label: c.label, ...(await c.run()) };
              got.set(c.label, record);
              emit(record);
            }
            for (const [label, mine] of got) {
              if (mine.side !== "ours") continue;
              const vs: Record<string, number> = {};
              for (const [theirLabel, theirs] of got) {
                if (theirs.side !== "qemu" || !mine.verified || !theirs.verified) continue;
                vs[`vs ${theirLabel}`] = round(Number(mine.GBps) / Number(theirs.GBps));
                // recv: the source's own completion, into ours against into that destination.
                if (mine.sourceSeconds && theirs.sourceSeconds) {
                  vs[`source vs ${theirLabel}`] = round(Number(theirs.sourceSeconds) / Number(mine.sourceSeconds));
                }
                // The library's own clocks, no process start: its call to the last byte, and its data phase.
                if (mine.callGBps) vs[`call vs ${theirLabel}`] = round(Number(mine.callGBps) / Number(theirs.GBps));
                if (mine.ownGBps) vs[`data vs ${theirLabel}`] = round(Number(mine.ownGBps) / Number(theirs.GBps));
              }
              const other = alsoLibrary && !mine.library
                ? got.get(ourLabel(mine.runtime as Runtime, alsoLibrary))
                : undefined;
              if (other?.verified && mine.verified) {
                vs["vs --also-library"] = round(Number(mine.GBps) / Number(other.GBps));
                vs["CPU vs --also-library"] = round(Number(mine.cpuSecondsPerGB) / Number(other.cpuSecondsPerGB));
              }
              emit({
                bench: "qemu-interop-round",
                round: round_,
                direction,
                qemuVersion: version,
                zerocopy,
                runtime: mine.runtime,
                label,
                ...vs,
              });
            }
          }
        }
      }
    }
  } finally {
    qemu.close();
  }
  const md = report(records, settings, rounds, env);
  files.writeMarkdown(md);
  out("\n" + md);
  note(`qemu_interop: results in ${files.jsonlPath}, ${files.markdownPath}`);
  return records.some((r) => r.bench === "qemu-interop" && r.verified !== true) ? 1 : 0;
}

if (import.meta.main) await runMain("qemu_interop.ts", main);
