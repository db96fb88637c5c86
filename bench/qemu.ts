/**
 * The reference system: real QEMU 7.2 (Debian's qemu-system-x86) migrating the same amount
 * of random RAM over loopback with multifd, on the same machine, in the same run as ours.
 * Used by `bench/multifd.ts --with-qemu`; runs alone too:
 *
 *   deno run -A bench/qemu.ts [--size-mib 2048] [--reps 3] [--configs multifd2,multifd4+zc]
 *
 * Set-up (needs root: it mounts a tmpfs, locks memory, and may apt-get install QEMU):
 * - guest RAM is a file on a private tmpfs mounted `huge=always`, mapped by
 *   `memory-backend-file,share=on,align=2M`, so both QEMUs use 2 MiB pages like our regions
 *   (on this VM every first touch of a 4 KiB page traps to the hypervisor);
 * - both sides pre-faulted before timing: the source by `-overcommit mem-lock=on` (required by
 *   zero-copy-send; used for every config so all are alike), the destination by
 *   `prealloc=on`; the source file is filled with random bytes once, the destination zeroed
 *   in place before every run (its pages stay allocated);
 * - no guest: `-machine none`, paused (`-S`), TCG with a small translation buffer; the
 *   destination waits with `-incoming defer`, then `migrate-incoming` over QMP.
 * Per run: capabilities `events` + `multifd` (+ `zero-copy-send` on the source),
 * `multifd-channels`, unlimited bandwidth and downtime; `migrate`; wait for the MIGRATION
 * `completed` event on both sides; then poll `query-migrate` until `total-time` is filled in
 * (7.2 emits "completed" before it computes it). GB/s = RAM bytes / total-time; CPU = user+sys
 * of each QEMU process (/proc/PID/stat) from `migrate` to completion; the destination file is
 * compared with the source after every run.
 * @module
 */
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import net from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";
import { Region } from "../mod.ts";
import { LineChild } from "../dev/child.ts";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { fillRandom } from "../util/random.ts";
import { cpuSecondsOf, runMain } from "./lib/proc.ts";
import { type BenchRecord, qemuSummaries, qemuTable } from "./lib/report.ts";

export const QEMU_CONFIGS = ["multifd1", "multifd2", "multifd4", "multifd2+zc", "multifd4+zc"] as const;
export type QemuConfig = typeof QEMU_CONFIGS[number];

const QEMU = "qemu-system-x86_64";
const MIGRATION_TIMEOUT_MS = 600_000;
const QMP_TIMEOUT_MS = 60_000;

export function parseQemuConfig(config: string): { channels: number; zerocopy: boolean } {
  const match = /^multifd(\d+)(\+zc)?$/.exec(config);
  if (!match) throw new Error(`unknown QEMU config "${config}" (multifdN or multifdN+zc)`);
  return { channels: Number(match[1]), zerocopy: match[2] !== undefined };
}

/** A minimal QMP client over the QEMU's unix socket: one command at a time, events queued. */
class Qmp {
  readonly events: Record<string, unknown>[] = [];
  #socket: net.Socket;
  #buffer = "";
  #pending: { resolve: (value: unknown) => void; reject: (error: Error) => void } | undefined;
  #eventWaiter: (() => void) | undefined;
  #closed = false;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      const lines = (this.#buffer + chunk).split("\n");
      this.#buffer = lines.pop()!;
      for (const line of lines) if (line.trim()) this.#message(JSON.parse(line));
    });
    const closed = () => {
      this.#closed = true;
      this.#pending?.reject(new Error("QMP connection closed"));
      this.#pending = undefined;
      this.#eventWaiter?.();
    };
    socket.on("close", closed);
    socket.on("error", closed);
  }

  /** Connects (retrying while QEMU starts) and leaves capabilities negotiation mode. */
  static async connect(path: string, child: LineChild): Promise<Qmp> {
    const started = performance.now();
    for (;;) {
      const socket = await new Promise<net.Socket | undefined>((resolve) => {
        const s = net.createConnection({ path });
        s.once("connect", () => resolve(s));
        s.once("error", () => (s.destroy(), resolve(undefined)));
      });
      if (socket) {
        const qmp = new Qmp(socket);
        await qmp.#greeting();
        await qmp.command("qmp_capabilities");
        return qmp;
      }
      const exited = await Promise.race([child.exited, new Promise((r) => setTimeout(() => r(undefined), 50))]);
      if (exited) throw new Error(`QEMU exited before its QMP socket came up: ${child.stderr.slice(-400)}`);
      if (performance.now() - started > QMP_TIMEOUT_MS) throw new Error(`QMP socket ${path} did not come up`);
    }
  }

  #greetingSeen: (() => void) | undefined;
  #greeting(): Promise<void> {
    return new Promise((resolve) => (this.#greetingSeen = resolve));
  }

  #message(message: Record<string, unknown>): void {
    if ("QMP" in message) return this.#greetingSeen?.();
    if ("event" in message) {
      this.events.push(message);
      this.#eventWaiter?.();
      return;
    }
    const pending = this.#pending;
    this.#pending = undefined;
    if (!pending) return;
    if ("error" in message) pending.reject(new Error(`QMP error: ${JSON.stringify(message.error)}`));
    else pending.resolve(message.return);
  }

  command<T = unknown>(execute: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error("QMP connection closed"));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`QMP ${execute}: no answer`)), QMP_TIMEOUT_MS);
      this.#pending = {
        resolve: (v) => (clearTimeout(timer), resolve(v as T)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.#socket.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + "\n");
    });
  }

  /** Waits for MIGRATION status "completed" (rejects on failed/cancelled). */
  async migrationCompleted(timeoutMs = MIGRATION_TIMEOUT_MS): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      while (this.events.length > 0) {
        const event = this.events.shift()!;
        if (event.event !== "MIGRATION") continue;
        const status = (event.data as { status: string }).status;
        if (status === "completed") return;
        if (status === "failed" || status === "cancelled") throw new Error(`migration ${status}`);
      }
      if (this.#closed) throw new Error("QMP connection closed during the migration");
      const left = deadline - performance.now();
      if (left <= 0) throw new Error("migration did not complete in time");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.#eventWaiter = () => (clearTimeout(timer), resolve());
      });
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}

function run(argv: string[]): { ok: boolean; output: string } {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

/** Installs Debian's qemu-system-x86 when missing; returns a reason when it cannot. */
function ensureQemu(): string | undefined {
  if (run([QEMU, "--version"]).ok) return undefined;
  if (!run(["which", "apt-get"]).ok) return `${QEMU} is not installed and apt-get is not available`;
  note("qemu: installing Debian's qemu-system-x86 (apt-get)…");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const update = spawnSync("apt-get", ["update", "-q"], { stdio: ["ignore", 2, 2], env });
  const install = update.status === 0
    ? spawnSync("apt-get", ["install", "-y", "-q", "--no-install-recommends", "qemu-system-x86"], {
      stdio: ["ignore", 2, 2],
      env,
    })
    : update;
  if (install.status !== 0 || !run([QEMU, "--version"]).ok) return "apt-get could not install qemu-system-x86";
  return undefined;
}

function memAvailableBytes(): number {
  const match = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"));
  return match ? Number(match[1]) * 1024 : 0;
}

function shmemPmdMappedKiB(pid: number): number {
  try {
    const match = /^ShmemPmdMapped:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return match ? Number(match[1]) : -1;
  } catch {
    return -1;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** Zeroes a file in place (its tmpfs pages stay allocated, so every run starts alike). */
function zeroInPlace(path: string, size: number): void {
  const zeros = new Uint8Array(8 << 20);
  const fd = openSync(path, "r+");
  try {
    for (let offset = 0; offset < size; offset += zeros.length) {
      writeSync(fd, zeros, 0, Math.min(zeros.length, size - offset), offset);
    }
  } finally {
    closeSync(fd);
  }
}

/** A prepared QEMU benchmark: a mounted huge tmpfs with the source RAM image in it. */
export class QemuBench {
  readonly version: string;
  readonly #work: string;
  readonly #ram: string;
  readonly #size: number;
  readonly #pids = new Set<number>();
  #mounted = false;
  #exitHook = () => this.#cleanupSync();
  /** Ctrl-C: exit through the exit hook, so the tmpfs is unmounted and QEMU killed. */
  #signalHook = () => process.exit(130);

  private constructor(work: string, size: number, version: string) {
    this.#work = work;
    this.#ram = `${work}/ram`;
    this.#size = size;
    this.version = version;
  }

  /** Installs QEMU if needed, mounts the tmpfs, writes the random source image. A string = skipped, why. */
  static async prepare(sizeBytes: number): Promise<QemuBench | string> {
    if (process.getuid?.() !== 0) return "needs root (mounts a tmpfs, locks guest memory, installs QEMU)";
    const missing = ensureQemu();
    if (missing) return missing;
    const needed = 2 * sizeBytes + 2 ** 30;
    if (memAvailableBytes() < needed) {
      return `needs ${(needed / 2 ** 30).toFixed(1)} GiB available memory for two guest RAM images`;
    }
    const version = run([QEMU, "--version"]).output.split("\n")[0];
    const bench = new QemuBench(`/tmp/zc-bench-qemu-${process.pid}`, sizeBytes, version);
    mkdirSync(bench.#ram, { recursive: true });
    process.on("exit", bench.#exitHook);
    process.on("SIGINT", bench.#signalHook);
    process.on("SIGTERM", bench.#signalHook);
    const mount = run([
      "mount",
      "-t",
      "tmpfs",
      "-o",
      `size=${2 * sizeBytes + (64 << 20)},huge=always,mode=0700`,
      "zc-bench-qemu",
      bench.#ram,
    ]);
    if (!mount.ok) {
      bench.#cleanupSync();
      return `could not mount a huge=always tmpfs: ${mount.output}`;
    }
    bench.#mounted = true;
    const started = performance.now();
    try {
      const source = Region.createFile(bench.#file("src"), sizeBytes);
      fillRandom(source);
      await source.close();
      await Region.createFile(bench.#file("dst"), sizeBytes).close();
    } catch (error) {
      bench.close();
      return `could not write the guest RAM images: ${(error as Error).message}`;
    }
    note(
      `qemu: ${version}; random ${sizeBytes / 2 ** 20} MiB image in ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s`,
    );
    return bench;
  }

  #file(name: "src" | "dst"): string {
    return `${this.#ram}/${name}.img`;
  }

  #argv(name: "src" | "dst"): string[] {
    const backend = `memory-backend-file,id=ram,size=${this.#size},mem-path=${this.#file(name)},share=on,align=2M` +
      (name === "dst" ? ",prealloc=on" : "");
    return [
      QEMU,
      "-name",
      `zc-bench-${name}`,
      "-machine",
      "none,memory-backend=ram",
      "-object",
      backend,
      "-nodefaults",
      "-display",
      "none",
      "-S",
      "-accel",
      "tcg,tb-size=16",
      "-qmp",
      `unix:${this.#work}/${name}.qmp,server=on,wait=off`,
      ...(name === "src" ? ["-overcommit", "mem-lock=on"] : ["-incoming", "defer"]),
    ];
  }

  /** The QEMU command lines (for the report). */
  get commandLines(): string[] {
    return [this.#argv("src").join(" "), this.#argv("dst").join(" ")];
  }

  /** One migration; resolves with its record. */
  async run(config: string, rep = 0): Promise<BenchRecord> {
    const { channels, zerocopy } = parseQemuConfig(config);
    const runStarted = performance.now();
    zeroInPlace(this.#file("dst"), this.#size);
    for (const name of ["src", "dst"]) rmSync(`${this.#work}/${name}.qmp`, { force: true });
    const dst = new LineChild(this.#argv("dst"), { label: "qemu dst" });
    const src = new LineChild(this.#argv("src"), { label: "qemu src" });
    this.#pids.add(dst.pid).add(src.pid);
    const qmps: Qmp[] = [];
    try {
      const qd = await Qmp.connect(`${this.#work}/dst.qmp`, dst);
      qmps.push(qd);
      const qs = await Qmp.connect(`${this.#work}/src.qmp`, src);
      qmps.push(qs);
      for (const [qmp, isSource] of [[qs, true], [qd, false]] as const) {
        const capabilities = [
          { capability: "events", state: true },
          { capability: "multifd", state: true },
          ...(zerocopy && isSource ? [{ capability: "zero-copy-send", state: true }] : []),
        ];
        await qmp.command("migrate-set-capabilities", { capabilities });
        await qmp.command("migrate-set-parameters", {
          "multifd-channels": channels,
          ...(isSource && { "max-bandwidth": 100e9, "downtime-limit": 300_000 }),
        });
      }
      const enabled = (await qs.command<{ capability: string; state: boolean }[]>("query-migrate-capabilities"))
        .filter((c) => c.state).map((c) => c.capability);
      if (enabled.includes("zero-copy-send") !== zerocopy || !enabled.includes("multifd")) {
        throw new Error(`QEMU capabilities not as asked: ${enabled.join(", ")}`);
      }
      const uri = `tcp:127.0.0.1:${await freePort()}`;
      await qd.command("migrate-incoming", { uri });
      const pmd = [shmemPmdMappedKiB(src.pid), shmemPmdMappedKiB(dst.pid)];
      const cpu0 = [cpuSecondsOf(src.pid), cpuSecondsOf(dst.pid)];
      const started = performance.now();
      await qs.command("migrate", { uri });
      await qs.migrationCompleted();
      await qd.migrationCompleted();
      const e2eSeconds = (performance.now() - started) / 1000;
      const cpu1 = [cpuSecondsOf(src.pid), cpuSecondsOf(dst.pid)];
      // 7.2 sends "completed" before it fills in total-time: poll until it is there.
      let info: Record<string, unknown> = {};
      for (const deadline = performance.now() + 10_000; performance.now() < deadline;) {
        info = await qs.command<Record<string, unknown>>("query-migrate");
        if (Number(info["total-time"]) > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      for (const qmp of qmps) await qmp.command("quit").catch(() => {});
      await Promise.race([
        Promise.all([src.exited, dst.exited]),
        new Promise((resolve) => setTimeout(resolve, 30_000)),
      ]);
      const totalMs = Number(info["total-time"]);
      const ram = (info.ram ?? {}) as Record<string, number>;
      const gb = this.#size / 1e9;
      return {
        bench: "qemu",
        config,
        rep,
        channels,
        zerocopy,
        bytes: this.#size,
        totalTimeMs: totalMs,
        GBps: round(gb / (totalMs / 1000)),
        e2eSeconds: round(e2eSeconds),
        srcCpuSeconds: round(cpu1[0] - cpu0[0], 2),
        dstCpuSeconds: round(cpu1[1] - cpu0[1], 2),
        srcCpuSecondsPerGB: round((cpu1[0] - cpu0[0]) / gb),
        dstCpuSecondsPerGB: round((cpu1[1] - cpu0[1]) / gb),
        transferredBytes: ram.transferred,
        zerocopyMissed: ram["dirty-sync-missed-zero-copy"],
        srcPmdMappedKiB: pmd[0],
        dstPmdMappedKiB: pmd[1],
        verified: await this.#verify(),
        wallSeconds: Math.round(performance.now() - runStarted) / 1000,
      };
    } finally {
      for (const qmp of qmps) qmp.close();
      await Promise.all([src.kill(), dst.kill()]);
      this.#pids.delete(src.pid);
      this.#pids.delete(dst.pid);
    }
  }

  async #verify(): Promise<boolean> {
    const a = Region.openFile(this.#file("src"));
    const b = Region.openFile(this.#file("dst"));
    try {
      return a.equals(b);
    } finally {
      await a.close();
      await b.close();
    }
  }

  /** Unmounts and removes everything (QEMU processes this bench started are killed). */
  close(): void {
    this.#cleanupSync();
    process.off("exit", this.#exitHook);
    process.off("SIGINT", this.#signalHook);
    process.off("SIGTERM", this.#signalHook);
  }

  #cleanupSync(): void {
    for (const pid of this.#pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    // Wait (briefly) until they are gone: their mappings keep the tmpfs busy.
    const deadline = performance.now() + 3000;
    while ([...this.#pids].some((pid) => existsSync(`/proc/${pid}`)) && performance.now() < deadline) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
    this.#pids.clear();
    if (this.#mounted) {
      for (const name of ["src", "dst"] as const) rmSync(this.#file(name), { force: true });
      // A lazy unmount as the fallback: detached now, freed when the last user is gone.
      this.#mounted = !run(["umount", this.#ram]).ok && !run(["umount", "-l", this.#ram]).ok;
    }
    if (!this.#mounted && existsSync(this.#work)) rmSync(this.#work, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      "size-mib": { type: "string", default: "2048" },
      reps: { type: "string", default: "3" },
      configs: { type: "string", default: QEMU_CONFIGS.join(",") },
    },
    strict: true,
  });
  const size = Number(values["size-mib"]) * 2 ** 20;
  const reps = Number(values.reps);
  const configs = values.configs.split(",");
  configs.forEach(parseQemuConfig);
  const bench = await QemuBench.prepare(size);
  if (typeof bench === "string") {
    note(`qemu: skipped: ${bench}`);
    return 0;
  }
  const records: BenchRecord[] = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const config of configs) {
        const record = await bench.run(config, rep);
        records.push(record);
        out(JSON.stringify(record));
      }
    }
  } finally {
    bench.close();
  }
  const sums = qemuSummaries(records);
  for (const s of sums) out(JSON.stringify(s));
  out("\n" + qemuTable(sums));
  return 0;
}

if (import.meta.main) await runMain("qemu.ts", main);
