/**
 * The reference system: real QEMU 7.2 (Debian bookworm's qemu-system-x86) and QEMU 10.0
 * (bookworm-backports, unpacked beside 7.2: dev/qemu_binaries.ts) migrating the same
 * amount of random RAM over loopback with multifd, on the same machine, in the same run as
 * ours; each version migrates to itself (7.2 → 7.2, 10.0 → 10.0). Used by
 * `bench/multifd.ts --with-qemu`; runs alone too:
 *
 *   deno run -A bench/qemu.ts [--size-mib 2048] [--reps 3] [--configs multifd2,multifd4+zc]
 *                             [--versions 7.2,10.0] [--prepare]
 *
 * `--prepare` only gets the QEMU binaries ready (apt) and prints their versions.
 * Set-up (needs root: it mounts a tmpfs, locks memory, and may apt-get QEMU):
 * - guest RAM is a file on a private tmpfs mounted `huge=always`, mapped by
 *   `memory-backend-file,share=on,align=2M`, so both QEMUs use 2 MiB pages like our regions
 *   (on this VM every first touch of a 4 KiB page traps to the hypervisor);
 * - both sides pre-faulted before timing: the source by `-overcommit mem-lock=on` (required by
 *   zero-copy-send; used for every config so all are alike), the destination by
 *   `prealloc=on`; the source file is filled with random bytes once, the destination zeroed
 *   in place before every run (its pages stay allocated); a "+fresh" config instead starts the
 *   destination on a new file without prealloc (parseQemuConfig);
 * - no guest: `-machine none`, paused (`-S`), TCG with a small translation buffer; the
 *   destination waits with `-incoming defer`, then `migrate-incoming` over QMP.
 * Per run: capabilities `events` + `multifd` (+ `zero-copy-send` on the source),
 * `multifd-channels`, unlimited bandwidth and downtime; `migrate`; wait for the MIGRATION
 * `completed` event on both sides; then poll `query-migrate` until `total-time` is filled in
 * (7.2 emits "completed" before it computes it). GB/s = RAM bytes / total-time; CPU = user+sys
 * of each QEMU process (/proc/PID/stat) from `migrate` to completion; the destination file is
 * compared with the source after every run. Both versions share the tmpfs and the images.
 * A config is "<version> multifdN[+zc|+tls]", e.g. "10.0 multifd4+zc". TLS: a CA and a server
 * certificate for "localhost" made with openssl once per run of the bench; the destination
 * has `tls-creds-x509,endpoint=server,verify-peer=off`, the source `endpoint=client`, and
 * both the `tls-creds` parameter (the source also `tls-hostname` localhost).
 * @module
 */
import { spawnSync } from "node:child_process";
import {
  closeSync,
  constants as fsConstants,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { Region } from "../mod.ts";
import { LineChild } from "../dev/child.ts";
import { Qmp } from "../dev/qmp.ts";
import { freePort } from "../dev/ports.ts";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { fillRandom } from "../util/random.ts";
import { type CpuTimes, cpuTimesOf, runMain } from "./lib/proc.ts";
import { type PageReporting, suspendPageReporting, touchFreeMemory, UNCHANGED } from "./lib/page_reporting.ts";
import {
  bareGuestArgv,
  ensureQemuBinary,
  isQemuVersion,
  QEMU_VERSIONS,
  type QemuBinary,
  type QemuVersion,
} from "../dev/qemu_binaries.ts";
import { type BenchRecord, qemuSummaries, qemuTable } from "./lib/report.ts";

export { QEMU_VERSIONS, type QemuVersion };
export const QEMU_CONFIGS = [
  "multifd1",
  "multifd2",
  "multifd4",
  "multifd2+zc",
  "multifd4+zc",
  "multifd4+tls",
] as const;
export type QemuConfig = typeof QEMU_CONFIGS[number];

/**
 * "multifd4+zc" or "10.0 multifd4+zc" (the version is undefined in the first form). A
 * "+fresh" suffix gives the destination new RAM, as a newly started destination VM has
 * (QEMU's default, prealloc=off): its pages are allocated and zeroed during the migration,
 * as the CLI's freshly created output file is, instead of before the clock. "+tls": every
 * channel over TLS (tls-creds-x509; QEMU refuses TLS with zero-copy-send).
 */
export function parseQemuConfig(config: string): {
  version: QemuVersion | undefined;
  base: string;
  channels: number;
  zerocopy: boolean;
  tls: boolean;
  fresh: boolean;
} {
  const match = /^(?:(\S+) )?(multifd(\d+)(\+zc)?(\+tls)?(\+fresh)?)$/.exec(config);
  if (!match || (match[1] !== undefined && !isQemuVersion(match[1])) || (match[4] && match[5])) {
    throw new Error(
      `unknown QEMU config "${config}" ([${QEMU_VERSIONS.join("|")} ]multifdN[+zc|+tls][+fresh])`,
    );
  }
  return {
    version: match[1] as QemuVersion | undefined,
    base: match[2],
    channels: Number(match[3]),
    zerocopy: match[4] !== undefined,
    tls: match[5] !== undefined,
    fresh: match[6] !== undefined,
  };
}

/** "10.0 multifd4+zc": the config of `version`. */
export const versionedConfig = (version: QemuVersion, config: string) => `${version} ${parseQemuConfig(config).base}`;

export function parseQemuVersions(text: string): QemuVersion[] {
  const versions = text.split(",").map((v) => v.trim());
  const bad = versions.filter((v) => !isQemuVersion(v));
  if (bad.length > 0 || versions.length === 0) {
    throw new Error(`unknown QEMU version(s) ${bad.join(", ")} (${QEMU_VERSIONS.join(", ")})`);
  }
  return [...new Set(versions)] as QemuVersion[];
}

function run(argv: string[]): { ok: boolean; output: string } {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
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

/** The kernel's page-reporting delay (2 s) and some time for the report itself. */
const PAGE_REPORTING_SETTLE_MS = 2500;

/** Zeroes a file in place (its tmpfs pages stay allocated, so every run starts alike). */
function zeroInPlace(path: string, size: number): void {
  const zeros = new Uint8Array(8 << 20);
  const fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_CREAT);
  try {
    for (let offset = 0; offset < size; offset += zeros.length) {
      writeSync(fd, zeros, 0, Math.min(zeros.length, size - offset), offset);
    }
  } finally {
    closeSync(fd);
  }
}

/** A prepared QEMU benchmark: the QEMU binaries, a mounted huge tmpfs with the source RAM image in it. */
export class QemuBench {
  /** The versions ready to run, in the order asked. */
  readonly versions: QemuVersion[];
  /** Why a version asked for is not there. */
  readonly skipped: Partial<Record<QemuVersion, string>>;
  readonly #binaries: Map<QemuVersion, QemuBinary>;
  readonly #work: string;
  readonly #ram: string;
  /** Directory of the TLS credentials (made on first use). */
  #tls: string | undefined;
  readonly #size: number;
  readonly #pids = new Set<number>();
  #mounted = false;
  /** This VM's free-page reporting, off while the bench runs (bench/lib/page_reporting.ts). */
  #pageReporting: PageReporting = UNCHANGED;
  /** Free memory touched once at the start, with reporting off (0: not done). */
  #touchedBytes = 0;
  #exitHook = () => this.#cleanupSync();
  /** Ctrl-C: exit through the exit hook, so the tmpfs is unmounted and QEMU killed. */
  #signalHook = () => process.exit(130);

  private constructor(
    work: string,
    size: number,
    binaries: Map<QemuVersion, QemuBinary>,
    skipped: Partial<Record<QemuVersion, string>>,
  ) {
    this.#work = work;
    this.#ram = `${work}/ram`;
    this.#size = size;
    this.#binaries = binaries;
    this.versions = [...binaries.keys()];
    this.skipped = skipped;
  }

  /**
   * Gets the QEMU versions ready (apt), mounts the tmpfs (room for the source and
   * destination images, and `extraImages` more of the same size: {@link scratch}), writes
   * the random source image.
   * A string = skipped, why (no version could be made ready, or no root, or not enough memory).
   */
  static async prepare(
    sizeBytes: number,
    versions: readonly QemuVersion[] = QEMU_VERSIONS,
    extraImages = 0,
    zeroPercent = 0,
  ): Promise<QemuBench | string> {
    if (process.getuid?.() !== 0) return "needs root (mounts a tmpfs, locks guest memory, installs QEMU)";
    const binaries = new Map<QemuVersion, QemuBinary>();
    const skipped: Partial<Record<QemuVersion, string>> = {};
    for (const version of versions) {
      const binary = ensureQemuBinary(version);
      if (typeof binary === "string") {
        skipped[version] = binary;
        note(`qemu: ${version} skipped: ${binary}`);
      } else binaries.set(version, binary);
    }
    if (binaries.size === 0) return Object.entries(skipped).map(([v, why]) => `QEMU ${v}: ${why}`).join("; ");
    const images = 2 + extraImages;
    const needed = images * sizeBytes + 2 ** 30;
    if (memAvailableBytes() < needed) {
      return `needs ${(needed / 2 ** 30).toFixed(1)} GiB available memory for ${images} guest RAM images`;
    }
    const bench = new QemuBench(`/tmp/zc-bench-qemu-${process.pid}`, sizeBytes, binaries, skipped);
    mkdirSync(bench.#ram, { recursive: true });
    process.on("exit", bench.#exitHook);
    process.on("SIGINT", bench.#signalHook);
    process.on("SIGTERM", bench.#signalHook);
    const mount = run([
      "mount",
      "-t",
      "tmpfs",
      "-o",
      `size=${images * sizeBytes + (64 << 20)},huge=always,mode=0700`,
      "zc-bench-qemu",
      bench.#ram,
    ]);
    if (!mount.ok) {
      bench.#cleanupSync();
      return `could not mount a huge=always tmpfs: ${mount.output}`;
    }
    bench.#mounted = true;
    bench.#pageReporting = suspendPageReporting();
    const started = performance.now();
    try {
      const source = Region.createFile(bench.#file("src"), sizeBytes);
      fillRandom(source);
      // A mostly idle guest: its last `zeroPercent` of RAM all zeros (whole pages).
      const zeroFrom = sizeBytes - Math.floor(sizeBytes * zeroPercent / 100 / 4096) * 4096;
      for (let at = zeroFrom; at < sizeBytes; at += 2 ** 30) source.view(at, Math.min(2 ** 30, sizeBytes - at)).fill(0);
      await source.close();
      await Region.createFile(bench.#file("dst"), sizeBytes).close();
      // Last: what is free now is what the runs will allocate.
      if (bench.#pageReporting.suspended) bench.#touchedBytes = await touchFreeMemory();
    } catch (error) {
      bench.close();
      return `could not write the guest RAM images: ${(error as Error).message}`;
    }
    if (bench.#touchedBytes > 0) {
      // The first fresh QEMU destination after the touch ran at a fifth of the speed of the
      // next ones, with about 4 s/GB of system time (in two probes and four of five benchmark
      // starts, 2026-12-03; a qemu-recv run right after the touch was not slow; why is not
      // known): one such migration, not counted, first.
      try {
        const settling = await bench.run(`${bench.versions[0]} multifd4+fresh`);
        note(`qemu: settling migration after the touch ${settling.GBps} GB/s (not counted)`);
      } catch (error) {
        bench.close();
        return `the settling migration failed: ${(error as Error).message}`;
      }
    }
    note(
      `qemu: ${[...binaries.values()].map((b) => b.versionLine).join("; ")}; random ${sizeBytes / 2 ** 20} MiB image${
        zeroPercent > 0 ? ` (its last ${zeroPercent}% zeros)` : ""
      }${bench.#touchedBytes > 0 ? ` and ${bench.#touchedBytes / 2 ** 30} GiB of free memory touched` : ""} in ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s`,
    );
    return bench;
  }

  /** Free-page reporting during this bench, for the report's header (bench/lib/page_reporting.ts). */
  get pageReporting(): string {
    const touched = this.#touchedBytes > 0 ? `; ${this.#touchedBytes / 2 ** 30} GiB of free memory touched first` : "";
    return `${this.#pageReporting.description}${touched}`;
  }

  /** `--version` of a version ready to run. */
  versionLine(version: QemuVersion): string {
    return this.#binary(version).versionLine;
  }

  #binary(version: QemuVersion): QemuBinary {
    const binary = this.#binaries.get(version);
    if (!binary) {
      throw new Error(`QEMU ${version} is not prepared${this.skipped[version] ? `: ${this.skipped[version]}` : ""}`);
    }
    return binary;
  }

  #file(name: "src" | "dst"): string {
    return `${this.#ram}/${name}.img`;
  }

  /** A CA and a server certificate for localhost, as tls-creds-x509 reads them from a directory. */
  #tlsCredentials(): string {
    if (this.#tls) return this.#tls;
    const dir = `${this.#work}/tls`;
    mkdirSync(dir, { recursive: true });
    const openssl = (...args: string[]) => {
      const r = run(["openssl", ...args]);
      if (!r.ok) throw new Error(`openssl ${args[0]} failed: ${r.output}`);
    };
    const days = ["-days", "2"];
    openssl(
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${dir}/ca-key.pem`,
      "-out",
      `${dir}/ca-cert.pem`,
      ...days,
      "-subj",
      "/CN=zc-bench CA",
    );
    openssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${dir}/server-key.pem`,
      "-out",
      `${dir}/server.csr`,
      "-subj",
      "/CN=localhost",
    );
    writeFileSync(
      `${dir}/server.ext`,
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" +
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    openssl(
      "x509",
      "-req",
      "-in",
      `${dir}/server.csr`,
      "-CA",
      `${dir}/ca-cert.pem`,
      "-CAkey",
      `${dir}/ca-key.pem`,
      "-CAcreateserial",
      "-out",
      `${dir}/server-cert.pem`,
      ...days,
      "-extfile",
      `${dir}/server.ext`,
    );
    return (this.#tls = dir);
  }

  #argv(binary: QemuBinary, name: "src" | "dst", fresh = false, tls = false): string[] {
    const backend = ",align=2M" + (name === "dst" && !fresh ? ",prealloc=on" : "");
    return [
      ...bareGuestArgv(binary, this.#file(name), this.#size, `${this.#work}/${name}.qmp`, backend),
      "-name",
      `zc-bench-${name}`,
      ...(name === "src" ? ["-overcommit", "mem-lock=on"] : ["-incoming", "defer"]),
      ...(tls
        ? [
          "-object",
          `tls-creds-x509,id=tls0,dir=${this.#tlsCredentials()},` +
          (name === "src" ? "endpoint=client" : "endpoint=server,verify-peer=off"),
        ]
        : []),
    ];
  }

  /** The command lines of `version`, source and destination (for the report). */
  commandLines(version: QemuVersion): string[] {
    const binary = this.#binary(version);
    const env = Object.entries(binary.env).map(([k, v]) => `${k}=${v} `).join("");
    return [`${env}${this.#argv(binary, "src").join(" ")}`, `${env}${this.#argv(binary, "dst").join(" ")}`];
  }

  /**
   * Starts one QEMU of a versioned config ("10.0 multifd4+zc"), configured for it: the
   * source with its RAM from the random image, or the destination (RAM zeroed in place, or
   * new with "+fresh") already listening (`migrate-incoming`) on {@link QemuSide.uri}.
   * {@link run} pairs two; an interop bench pairs one with ours.
   */
  async start(role: "src" | "dst", config: string): Promise<QemuSide> {
    const { version, channels, zerocopy, tls, fresh } = parseQemuConfig(config);
    if (version === undefined) throw new Error(`QEMU config "${config}" names no version`);
    const binary = this.#binary(version);
    if (role === "dst") {
      if (fresh) rmSync(this.#file("dst"), { force: true });
      else zeroInPlace(this.#file("dst"), this.#size);
    }
    const qmpPath = `${this.#work}/${role}.qmp`;
    rmSync(qmpPath, { force: true });
    const child = new LineChild(this.#argv(binary, role, fresh, tls), {
      label: `qemu ${version} ${role}`,
      env: binary.env,
    });
    this.#pids.add(child.pid);
    const side = new QemuSide(child, () => this.#pids.delete(child.pid));
    try {
      const qmp = side.qmp = await Qmp.connect(qmpPath, child);
      const capabilities = [
        { capability: "events", state: true },
        { capability: "multifd", state: true },
        ...(zerocopy && role === "src" ? [{ capability: "zero-copy-send", state: true }] : []),
      ];
      await qmp.command("migrate-set-capabilities", { capabilities });
      await qmp.command("migrate-set-parameters", {
        "multifd-channels": channels,
        ...(role === "src" && { "max-bandwidth": 100e9, "downtime-limit": 300_000 }),
        ...(tls && { "tls-creds": "tls0" }),
        ...(tls && role === "src" && { "tls-hostname": "localhost" }),
      });
      if (role === "src") {
        const enabled = (await qmp.command<{ capability: string; state: boolean }[]>("query-migrate-capabilities"))
          .filter((c) => c.state).map((c) => c.capability);
        if (enabled.includes("zero-copy-send") !== zerocopy || !enabled.includes("multifd")) {
          throw new Error(`QEMU capabilities not as asked: ${enabled.join(", ")}`);
        }
      } else {
        side.uri = `tcp:127.0.0.1:${await freePort()}`;
        await qmp.command("migrate-incoming", { uri: side.uri });
      }
      return side;
    } catch (error) {
      await side.kill();
      throw error;
    }
  }

  /**
   * Makes the next allocation of `size` bytes of fresh RAM cost what it costs on an ordinary
   * host. This VM's kernel reports free memory to the hypervisor (`page_reporting`: 2 s
   * after memory is freed it reports every free 2 MiB block, and the hypervisor takes those
   * pages away), so a first touch of reported memory faults into the hypervisor: a transfer
   * that allocates its destination while a report runs spends most of its time in
   * `clear_page_erms` (seen with `perf`). So: wait until the report that earlier frees (the
   * previous run's output) scheduled is over, then write and delete an image's worth of
   * pages on the tmpfs, leaving that much freshly freed, not to be reported for 2 s, for
   * the run that starts right after. Needs room for one more image on the tmpfs. With
   * reporting off for the bench (bench/lib/page_reporting.ts, the default) nothing is taken
   * away any more, and {@link prepare} touched all free memory once (touchFreeMemory): every
   * page a run allocates is the guest's already, and this does nothing.
   */
  async warmFreeMemory(): Promise<void> {
    if (this.#touchedBytes > 0) return;
    if (!this.#pageReporting.suspended) await new Promise((resolve) => setTimeout(resolve, PAGE_REPORTING_SETTLE_MS));
    const path = this.scratch("warm.img");
    zeroInPlace(path, this.#size);
    rmSync(path, { force: true });
  }

  /**
   * One migration of a versioned config ("10.0 multifd4+zc"), QEMU to QEMU; resolves with
   * its record. `beforeMigrate` runs right before the clock starts.
   */
  async run(config: string, rep = 0, beforeMigrate?: () => Promise<void>): Promise<BenchRecord> {
    const { version, channels, zerocopy, tls } = parseQemuConfig(config);
    const runStarted = performance.now();
    const sides: QemuSide[] = [];
    try {
      const dst = await this.start("dst", config);
      sides.push(dst);
      const src = await this.start("src", config);
      sides.push(src);
      const pmd = [shmemPmdMappedKiB(src.pid), shmemPmdMappedKiB(dst.pid)];
      await beforeMigrate?.();
      const cpu0 = [src.cpuTimes(), dst.cpuTimes()];
      const started = performance.now();
      await src.qmp.command("migrate", { uri: dst.uri });
      const [srcCompletedSeconds] = await Promise.all([
        src.qmp.migrationCompleted().then(() => (performance.now() - started) / 1000),
        dst.qmp.migrationCompleted(),
      ]);
      const e2eSeconds = (performance.now() - started) / 1000;
      const cpu1 = [src.cpuTimes(), dst.cpuTimes()];
      const info = await src.migrationInfo();
      await Promise.all(sides.map((side) => side.quit()));
      const totalMs = Number(info["total-time"]);
      const ram = (info.ram ?? {}) as Record<string, number>;
      const gb = this.#size / 1e9;
      return {
        bench: "qemu",
        config,
        qemuVersion: version,
        rep,
        channels,
        zerocopy,
        tls,
        bytes: this.#size,
        totalTimeMs: totalMs,
        GBps: round(gb / (totalMs / 1000)),
        e2eSeconds: round(e2eSeconds),
        srcCompletedSeconds: round(srcCompletedSeconds),
        srcCpuSeconds: round(cpu1[0].total - cpu0[0].total, 2),
        dstCpuSeconds: round(cpu1[1].total - cpu0[1].total, 2),
        srcCpuSecondsPerGB: round((cpu1[0].total - cpu0[0].total) / gb),
        dstCpuSecondsPerGB: round((cpu1[1].total - cpu0[1].total) / gb),
        srcSystemCpuSecondsPerGB: round((cpu1[0].system - cpu0[0].system) / gb),
        dstSystemCpuSecondsPerGB: round((cpu1[1].system - cpu0[1].system) / gb),
        transferredBytes: ram.transferred,
        zerocopyMissed: ram["dirty-sync-missed-zero-copy"],
        srcPmdMappedKiB: pmd[0],
        dstPmdMappedKiB: pmd[1],
        verified: await this.matchesSource(this.#file("dst")),
        wallSeconds: Math.round(performance.now() - runStarted) / 1000,
      };
    } finally {
      await Promise.all(sides.map((side) => side.kill()));
    }
  }

  /** The random RAM image every source migrates (a file on the huge tmpfs). */
  get sourceImage(): string {
    return this.#file("src");
  }

  /** The destination QEMU's RAM file. */
  get destinationImage(): string {
    return this.#file("dst");
  }

  /** A path on the bench's huge tmpfs for files of its own (room: `extraImages` of prepare). */
  scratch(name: string): string {
    return `${this.#ram}/${name}`;
  }

  /** Whether file `path` holds the same bytes as the source image. */
  async matchesSource(path: string): Promise<boolean> {
    const a = Region.openFile(this.#file("src"));
    const b = Region.openFile(path);
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
    this.#pageReporting.restore();
    if (this.#mounted) {
      for (const name of readdirSync(this.#ram)) rmSync(`${this.#ram}/${name}`, { recursive: true, force: true });
      // A lazy unmount as the fallback: detached now, freed when the last user is gone.
      this.#mounted = !run(["umount", this.#ram]).ok && !run(["umount", "-l", this.#ram]).ok;
    }
    if (!this.#mounted && existsSync(this.#work)) rmSync(this.#work, { recursive: true, force: true });
  }
}

/** One running QEMU of a bench run: its process, its QMP, and (a destination) where it listens. */
export class QemuSide {
  /** Set once QMP is connected. */
  qmp!: Qmp;
  /** A destination's `migrate-incoming` URI ("tcp:127.0.0.1:PORT"). */
  uri = "";
  readonly #child: LineChild;
  readonly #forget: () => void;

  constructor(child: LineChild, forget: () => void) {
    this.#child = child;
    this.#forget = forget;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** The destination's port. */
  get port(): number {
    return Number(this.uri.slice(this.uri.lastIndexOf(":") + 1));
  }

  /** User + system CPU seconds of the QEMU process so far. */
  cpuSeconds(): number {
    return this.cpuTimes().total;
  }

  /** {@link cpuSeconds} and its system (kernel) part. */
  cpuTimes(): CpuTimes {
    return cpuTimesOf(this.#child.pid);
  }

  /** The source's `query-migrate` once `total-time` is filled in (7.2 emits "completed" before it computes it). */
  async migrationInfo(): Promise<Record<string, unknown>> {
    let info: Record<string, unknown> = {};
    for (const deadline = performance.now() + 10_000; performance.now() < deadline;) {
      info = await this.qmp.command<Record<string, unknown>>("query-migrate");
      if (Number(info["total-time"]) > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return info;
  }

  /** Asks QEMU to quit and waits for it (at most 30 s). */
  async quit(): Promise<void> {
    await this.qmp?.command("quit").catch(() => {});
    await Promise.race([this.#child.exited, new Promise((resolve) => setTimeout(resolve, 30_000))]);
  }

  /** Closes QMP and kills the process (if still there). */
  async kill(): Promise<void> {
    this.qmp?.close();
    await this.#child.kill();
    this.#forget();
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      "size-mib": { type: "string", default: "2048" },
      reps: { type: "string", default: "3" },
      configs: { type: "string", default: QEMU_CONFIGS.join(",") },
      versions: { type: "string", default: QEMU_VERSIONS.join(",") },
      prepare: { type: "boolean", default: false },
    },
    strict: true,
  });
  const size = Number(values["size-mib"]) * 2 ** 20;
  const reps = Number(values.reps);
  const versions = parseQemuVersions(values.versions);
  const configs = values.configs.split(",").map((c) => c.trim());
  configs.forEach(parseQemuConfig);
  if (values.prepare) {
    let ok = true;
    for (const version of versions) {
      const binary = ensureQemuBinary(version);
      ok &&= typeof binary !== "string";
      out(
        typeof binary === "string"
          ? `QEMU ${version}: unavailable: ${binary}`
          : `QEMU ${version}: ${
            [...Object.entries(binary.env).map(([k, v]) => `${k}=${v}`), ...binary.argv].join(" ")
          } (${binary.versionLine})`,
      );
    }
    return ok ? 0 : 1;
  }
  const bench = await QemuBench.prepare(size, versions);
  if (typeof bench === "string") {
    note(`qemu: skipped: ${bench}`);
    return 0;
  }
  const records: BenchRecord[] = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const config of configs) {
        // A versioned config runs as it is; a plain one under every version, the order alternating by round.
        const order = rep % 2 ? [...bench.versions].reverse() : bench.versions;
        const runs = parseQemuConfig(config).version ? [config] : order.map((v) => versionedConfig(v, config));
        for (const versioned of runs) {
          const record = await bench.run(versioned, rep);
          records.push(record);
          out(JSON.stringify(record));
        }
      }
    }
  } finally {
    bench.close();
  }
  const sums = qemuSummaries(records);
  for (const s of sums) out(JSON.stringify(s));
  out("\n" + qemuTable(sums));
  return records.some((r) => r.verified !== true) ? 1 : 0;
}

if (import.meta.main) await runMain("qemu.ts", main);
