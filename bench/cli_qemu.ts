/**
 * The CLI (examples/migrate.ts send/recv) on files in a huge-page tmpfs against QEMU's
 * multifd migration, interleaved round by round (this VM drifts, so only ratios within a
 * round compare). Per round and mode (plain, zero-copy): the CLI under each runtime sends a
 * random file on a private `huge=always` tmpfs to a receiver writing its output on the same
 * tmpfs over 4 channels; right after, QEMU 7.2 and 10.0 migrate the same amount of random
 * RAM with the matching config (multifd4 / multifd4+zc; bench/qemu.ts, its own huge tmpfs).
 * For scale, once per round: a single-stream `socat` copy of the same file over loopback.
 * One warm-up transfer runs first, not counted; the order of runtimes and of QEMU variants
 * alternates from round to round.
 *
 *   deno run -A bench/cli_qemu.ts [--rounds 5] [--size-mib 2048] [--runtimes deno,bun]
 *                                 [--versions 7.2,10.0] [--modes plain,zc]
 *                                 [--qemu-destinations prealloc,fresh] [--outputs fresh,prepared]
 *
 * QEMU destinations: "prealloc" is bench/qemu.ts's set-up (RAM allocated and zeroed before
 * the clock); "fresh" is a newly started destination (QEMU's default, prealloc=off), whose
 * RAM is allocated and zeroed during the migration, as the CLI's new output file is.
 * "best QEMU" is the better prealloc version; "best fresh QEMU" the better fresh one. The
 * CLI's output likewise: "fresh" is created when the sender's size arrives (pages allocated
 * and zeroed during the transfer); "prepared" is `recv --size`, which allocates it while
 * the receiver waits, before the clock (as QEMU's prealloc). Before
 * every CLI run and every fresh QEMU run, an image's worth of memory is written and freed
 * (QemuBench.warmFreeMemory): this VM hands free memory back to its hypervisor after a few
 * seconds, and first touches of such memory cost several times more, at random.
 *
 * Needs root (mounts tmpfs). CLI GB/s is the sender's own figure (first byte to verified);
 * `wallSeconds` is end to end: sender process start to both processes exited (the receiver
 * is started and listening before the clock starts), verified. QEMU GB/s = RAM / total-time.
 * Ratios: CLI GB/s / QEMU GB/s per version and against the better QEMU of the round.
 * Results: bench/results/<timestamp>-cli-qemu.{jsonl,md}.
 * @module
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { Region } from "../mod.ts";
import { ROOT } from "../dev/root.ts";
import { currentRuntime, type Runtime, RUNTIMES, scriptArgv } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { fillRandom } from "../util/random.ts";
import { runMain } from "./lib/proc.ts";
import { type BenchRecord, ResultsFiles } from "./lib/report.ts";
import { parseQemuVersions, QEMU_VERSIONS, QemuBench } from "./qemu.ts";

type Mode = "plain" | "zc";
type Destination = "prealloc" | "fresh";
/** The CLI receiver's output: created at the sender's size, or prepared ahead (`recv --size`). */
type Output = "fresh" | "prepared";
const BEST_KEY: Record<Destination, string> = { prealloc: "vsBest", fresh: "vsBestFresh" };
const BEST_LABEL: Record<Destination, string> = { prealloc: "CLI/best QEMU", fresh: "CLI/best fresh QEMU" };
const CLI = `${ROOT}examples/migrate.ts`;

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Spawns argv; `ready` resolves with the first stderr match of `waitFor` (if given). */
function start(argv: string[], waitFor?: RegExp) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  let onMatch: ((m: RegExpExecArray) => void) | undefined;
  const ready = new Promise<RegExpExecArray>((resolve) => (onMatch = resolve));
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
    const m = waitFor?.exec(stderr);
    if (m && onMatch) (onMatch(m), onMatch = undefined);
  });
  const exited = new Promise<Exit>((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
  return { child, ready, exited };
}

function lastJson(text: string): Record<string, unknown> {
  const line = text.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  return line ? JSON.parse(line) : {};
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const stat = (values: number[]) =>
  values.length === 0
    ? "–"
    : `${round(median(values), 2)} (${round(Math.min(...values), 2)}–${round(Math.max(...values), 2)})`;

class Tmpfs {
  readonly dir = `/tmp/zc-bench-cli-qemu-${process.pid}`;
  #mounted = false;
  #hook = () => this.close();

  mount(bytes: number): void {
    mkdirSync(this.dir, { recursive: true });
    const r = spawnSync(
      "mount",
      ["-t", "tmpfs", "-o", `size=${bytes},huge=always,mode=0700`, "zc-bench-cli", this.dir],
      {
        encoding: "utf8",
      },
    );
    if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
    this.#mounted = true;
    process.on("exit", this.#hook);
  }

  close(): void {
    if (this.#mounted) {
      rmSync(`${this.dir}/in.bin`, { force: true });
      rmSync(`${this.dir}/out.bin`, { force: true });
      const ok = spawnSync("umount", [this.dir]).status === 0 || spawnSync("umount", ["-l", this.dir]).status === 0;
      this.#mounted = !ok;
    }
    if (!this.#mounted && existsSync(this.dir)) rmSync(this.dir, { recursive: true, force: true });
    process.off("exit", this.#hook);
  }
}

/** One CLI transfer; `beforeStart` runs right before the clock starts (the receiver is listening by then). */
async function cliRun(
  fs: Tmpfs,
  runtime: Runtime,
  mode: Mode,
  size: number,
  prepared: boolean,
  beforeStart?: () => Promise<void>,
): Promise<BenchRecord> {
  const input = `${fs.dir}/in.bin`, output = `${fs.dir}/out.bin`, key = `${fs.dir}/secret.key`;
  rmSync(output, { force: true });
  const recv = start(
    scriptArgv(runtime, CLI, [
      "recv",
      "--listen",
      "127.0.0.1:0",
      "--file",
      output,
      ...(prepared ? ["--size", String(size)] : []),
      "--secret-file",
      key,
      "--json",
    ]),
    /listening on \S*:(\d+)/,
  );
  const port = await Promise.race([
    recv.ready.then((m) => m[1]),
    recv.exited.then((e) => {
      throw new Error(`receiver exited early: ${e.stderr.slice(-400)}`);
    }),
  ]);
  await beforeStart?.();
  const started = performance.now();
  const send = start(scriptArgv(runtime, CLI, [
    "send",
    "--to",
    `127.0.0.1:${port}`,
    "--file",
    input,
    "--channels",
    "4",
    ...(mode === "zc" ? ["--zerocopy"] : []),
    "--secret-file",
    key,
    "--json",
  ]));
  const [s, r] = await Promise.all([send.exited, recv.exited]);
  const wallSeconds = (performance.now() - started) / 1000;
  const sj = lastJson(s.stdout), rj = lastJson(r.stdout);
  const ok = s.code === 0 && r.code === 0 && sj.verified === true && rj.verified === true;
  if (!ok) note(`cli ${runtime} ${mode}: failed: ${s.stderr.slice(-300)} | ${r.stderr.slice(-300)}`);
  return {
    bench: "cli",
    runtime,
    mode,
    output: prepared ? "prepared" : "fresh",
    channels: 4,
    zerocopy: mode === "zc",
    bytes: size,
    GBps: sj.GBps as number,
    seconds: sj.seconds as number,
    recvGBps: rj.GBps as number,
    checksumSeconds: sj.checksumSeconds as number,
    wallSeconds: round(wallSeconds),
    wallGBps: round(size / 1e9 / wallSeconds),
    verified: ok,
    ...(ok ? {} : { error: `${s.stderr.slice(-300)} | ${r.stderr.slice(-300)}` }),
  };
}

async function socatRun(fs: Tmpfs, size: number): Promise<BenchRecord> {
  const input = `${fs.dir}/in.bin`, output = `${fs.dir}/out.bin`;
  rmSync(output, { force: true });
  const port = 20000 + Math.floor(Math.random() * 20000);
  const recv = start(
    ["socat", "-d", "-d", "-u", `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr`, `CREATE:${output}`],
    /listening on/,
  );
  await Promise.race([recv.ready, recv.exited.then((e) => Promise.reject(new Error(`socat: ${e.stderr}`)))]);
  const started = performance.now();
  const send = start(["socat", "-u", `OPEN:${input},rdonly`, `TCP:127.0.0.1:${port}`]);
  const [s, r] = await Promise.all([send.exited, recv.exited]);
  const wallSeconds = (performance.now() - started) / 1000;
  const a = Region.openFile(input), b = Region.openFile(output);
  const verified = s.code === 0 && r.code === 0 && a.size === b.size && a.equals(b);
  await a.close();
  await b.close();
  return {
    bench: "socat",
    bytes: size,
    wallSeconds: round(wallSeconds),
    GBps: round(size / 1e9 / wallSeconds),
    verified,
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string", default: "5" },
      "size-mib": { type: "string", default: "2048" },
      runtimes: { type: "string", default: currentRuntime },
      versions: { type: "string", default: QEMU_VERSIONS.join(",") },
      modes: { type: "string", default: "plain,zc" },
      "qemu-destinations": { type: "string", default: "prealloc,fresh" },
      outputs: { type: "string", default: "fresh,prepared" },
    },
    strict: true,
  });
  const rounds = Number(values.rounds);
  const size = Number(values["size-mib"]) * 2 ** 20;
  const runtimes = values.runtimes.split(",").map((r) => r.trim()) as Runtime[];
  if (runtimes.some((r) => !RUNTIMES.includes(r))) throw new Error(`--runtimes: ${RUNTIMES.join(",")}`);
  const modes = values.modes.split(",").map((m) => m.trim()) as Mode[];
  if (modes.some((m) => m !== "plain" && m !== "zc")) throw new Error("--modes: plain,zc");
  const destinations = values["qemu-destinations"].split(",").map((d) => d.trim()) as Destination[];
  if (destinations.length === 0 || destinations.some((d) => d !== "prealloc" && d !== "fresh")) {
    throw new Error("--qemu-destinations: prealloc,fresh");
  }
  const outputs = values.outputs.split(",").map((o) => o.trim()) as Output[];
  if (outputs.length === 0 || outputs.some((o) => o !== "fresh" && o !== "prepared")) {
    throw new Error("--outputs: fresh,prepared");
  }
  // The single-stream row for scale: Debian's socat, installed as QEMU is when missing (root).
  let haveSocat = spawnSync("socat", ["-V"]).status === 0;
  if (!haveSocat && process.getuid?.() === 0) {
    note("cli_qemu: installing socat (apt-get) for the single-stream row");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const install = () =>
      spawnSync("apt-get", ["install", "-y", "-q", "--no-install-recommends", "socat"], { stdio: "ignore", env });
    if (install().status !== 0) {
      spawnSync("apt-get", ["update", "-q"], { stdio: "ignore", env });
      install();
    }
    haveSocat = spawnSync("socat", ["-V"]).status === 0;
  }
  if (!haveSocat) note("cli_qemu: socat not found: no single-stream row (apt-get install socat)");

  // One image of room more: the memory warmed before every run that allocates fresh pages.
  const qemu = await QemuBench.prepare(size, parseQemuVersions(values.versions), 1);
  if (typeof qemu === "string") {
    note(`cli_qemu: QEMU skipped: ${qemu}`);
    return 1;
  }
  const variants = qemu.versions.flatMap((version) =>
    destinations.map((destination) => ({
      version,
      destination,
      label: destination === "fresh" ? `${version} fresh` : version,
    }))
  );
  const fs = new Tmpfs();
  const files = new ResultsFiles("cli-qemu");
  const records: BenchRecord[] = [];
  const emit = (record: BenchRecord) => {
    records.push(record);
    files.append(record);
    out(JSON.stringify(record));
  };
  try {
    fs.mount(2 * size + (64 << 20));
    writeFileSync(
      `${fs.dir}/secret.key`,
      Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join(""),
      { mode: 0o600 },
    );
    const source = Region.createFile(`${fs.dir}/in.bin`, size);
    fillRandom(source);
    await source.close();
    note(
      `cli_qemu: ${rounds} rounds, ${size / 2 ** 20} MiB, runtimes ${runtimes.join(",")}, QEMU ${
        qemu.versions.map((v) => qemu.versionLine(v)).join("; ")
      }; free-page reporting ${qemu.pageReporting}`,
    );
    // Not recorded: the first transfer after the mount pays for compacting memory into 2 MiB
    // pages (measured 3-5x slower than the next ones), whichever runs first.
    // The CLI's output file and a fresh QEMU destination allocate their pages during the
    // transfer: the same amount of freshly freed memory first (QemuBench.warmFreeMemory).
    const warm = () => qemu.warmFreeMemory();
    const warmUp = await cliRun(fs, runtimes[0], modes[0], size, false);
    note(`cli_qemu: warm-up transfer (not counted): ${warmUp.GBps} GB/s`);
    for (let rep = 0; rep < rounds; rep++) {
      for (const mode of modes) {
        const cli: BenchRecord[] = [];
        // The runtimes' order alternates too: the first run after QEMU's or socat's is not
        // always alike.
        for (const runtime of rep % 2 ? [...runtimes].reverse() : runtimes) {
          for (const output of outputs) {
            // A prepared output allocated its pages before the clock: nothing to warm for it.
            const prepared = output === "prepared";
            const r = { round: rep, ...(await cliRun(fs, runtime, mode, size, prepared, prepared ? undefined : warm)) };
            cli.push(r);
            emit(r);
          }
        }
        const order = rep % 2 ? [...variants].reverse() : variants;
        const q: Record<string, number | undefined> = {};
        for (const variant of order) {
          const fresh = variant.destination === "fresh" ? "+fresh" : "";
          const config = `${variant.version} multifd4${mode === "zc" ? "+zc" : ""}${fresh}`;
          const r = await qemu.run(config, rep, fresh ? warm : undefined);
          q[variant.label] = r.verified ? r.GBps as number : undefined;
          emit({ round: rep, mode, destination: variant.destination, ...r });
        }
        const bestOf = (destination: Destination) =>
          Math.max(0, ...variants.filter((v) => v.destination === destination).map((v) => q[v.label] ?? 0));
        for (const c of cli) {
          const ratios: Record<string, number> = {};
          for (const v of variants) {
            if (q[v.label] && c.verified) ratios[`vs${v.label}`] = round((c.GBps as number) / q[v.label]!);
          }
          for (const destination of destinations) {
            const best = bestOf(destination);
            if (c.verified && best > 0) ratios[BEST_KEY[destination]] = round((c.GBps as number) / best);
          }
          emit({
            bench: "cli-qemu-round",
            round: rep,
            runtime: c.runtime,
            mode,
            output: c.output,
            cliGBps: c.GBps,
            qemuGBps: q,
            ...ratios,
          });
        }
      }
      if (haveSocat) emit({ round: rep, ...(await socatRun(fs, size)) });
    }
  } finally {
    qemu.close();
    fs.close();
  }

  // Markdown: medians (min–max) over rounds.
  const pick = (f: (r: BenchRecord) => boolean, k: string) =>
    records.filter(f).map((r) => r[k]).filter((v): v is number => typeof v === "number");
  const lines = [
    `CLI (examples/migrate.ts, 4 channels, files on a huge=always tmpfs) vs QEMU multifd4, ${
      size / 2 ** 20
    } MiB random, ${rounds} rounds interleaved; median (min–max).`,
    "",
    `| runtime | mode | CLI output | CLI GB/s | CLI wall s (e2e) | CLI checksum s | ${
      variants.map((v) => `QEMU ${v.label} GB/s`).join(" | ")
    } | ${variants.map((v) => `CLI/${v.label}`).join(" | ")} | ${destinations.map((d) => BEST_LABEL[d]).join(" | ")} |`,
    `|---|---|---|---|---|---|${variants.map(() => "---|").join("")}${variants.map(() => "---|").join("")}${
      destinations.map(() => "---|").join("")
    }`,
  ];
  for (const runtime of runtimes) {
    for (const mode of modes) {
      for (const output of outputs) {
        const isCli = (r: BenchRecord) =>
          r.bench === "cli" && r.runtime === runtime && r.mode === mode && r.output === output;
        const isRound = (r: BenchRecord) =>
          r.bench === "cli-qemu-round" && r.runtime === runtime && r.mode === mode && r.output === output;
        const qemuCells = variants.map((v) =>
          stat(pick(
            (r) =>
              r.bench === "qemu" && r.mode === mode && r.qemuVersion === v.version && r.destination === v.destination &&
              r.verified === true,
            "GBps",
          ))
        );
        lines.push(
          `| ${runtime} | ${mode} | ${output} | ${stat(pick(isCli, "GBps"))} | ${stat(pick(isCli, "wallSeconds"))} | ${
            stat(pick(isCli, "checksumSeconds"))
          } | ${qemuCells.join(" | ")} | ${variants.map((v) => stat(pick(isRound, `vs${v.label}`))).join(" | ")} | ${
            destinations.map((d) => stat(pick(isRound, BEST_KEY[d]))).join(" | ")
          } |`,
        );
      }
    }
  }
  if (haveSocat) {
    const isSocat = (r: BenchRecord) => r.bench === "socat";
    lines.push(
      "",
      `Single stream for scale (socat, same file, loopback, output on the same tmpfs): ${
        stat(pick(isSocat, "GBps"))
      } GB/s, wall ${stat(pick(isSocat, "wallSeconds"))} s.`,
    );
  }
  const failed = records.filter((r) => r.verified === false).length;
  if (failed) lines.push("", `${failed} run(s) failed or not verified (see the .jsonl).`);
  const md = lines.join("\n");
  files.writeMarkdown(md);
  out("\n" + md);
  note(`cli_qemu: results in ${files.jsonlPath}, ${files.markdownPath}`);
  return failed ? 1 : 0;
}

if (import.meta.main) await runMain("cli_qemu.ts", main);
