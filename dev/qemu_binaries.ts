/**
 * The QEMU binaries the benchmark compares with, made ready to run (needs root for apt):
 * - 7.2: Debian bookworm's `qemu-system-x86`, installed with apt-get when missing;
 * - 10.0: Debian bookworm-backports' `qemu-system-x86`, `qemu-system-common` and
 *   `qemu-system-data`, fetched with `apt-get download` and unpacked with `dpkg -x` into a
 *   cache prefix (default /var/cache/zerocopy-multifd/qemu-10.0, env `ZC_QEMU10_PREFIX`),
 *   never installed over 7.2. The backports suite is added to apt's sources when missing
 *   (same mirror and keyring as the system's own entries), then `apt-get update`. The
 *   binary runs with `-L <prefix>/usr/share/qemu` and `QEMU_MODULE_DIR` pointing into the
 *   prefix (else it would look for 7.2's modules); libraries it needs that are missing
 *   (`ldd`) are installed with `apt-get satisfy` from the package's Depends.
 * Idempotent: a prefix whose binary answers `--version` with 10.0 is used as it is.
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { err as note } from "../util/output.ts";

export const QEMU_VERSIONS = ["7.2", "10.0"] as const;
export type QemuVersion = typeof QEMU_VERSIONS[number];

export function isQemuVersion(version: string): version is QemuVersion {
  return (QEMU_VERSIONS as readonly string[]).includes(version);
}

/** How to start one QEMU version. */
export interface QemuBinary {
  version: QemuVersion;
  /** First line of `--version`, e.g. "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)". */
  versionLine: string;
  /** The binary and the options every command line starts with. */
  argv: string[];
  /** Environment for the process (added to this process's). */
  env: Record<string, string>;
}

const SYSTEM_QEMU = "qemu-system-x86_64";
const PACKAGES_10 = ["qemu-system-x86", "qemu-system-common", "qemu-system-data"];
const APT_ENV = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };

export const qemu10Prefix = () => process.env.ZC_QEMU10_PREFIX || "/var/cache/zerocopy-multifd/qemu-10.0";

function run(argv: string[], options: { env?: Record<string, string>; cwd?: string } = {}) {
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: "utf8",
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
  });
  return { ok: r.status === 0, stdout: r.stdout ?? "", output: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

/** apt-get with its progress on our stderr; true when it succeeded. */
function apt(args: string[], cwd?: string): boolean {
  return spawnSync("apt-get", args, { stdio: ["ignore", 2, 2], env: APT_ENV, cwd }).status === 0;
}

function versionLineOf(argv0: string, env: Record<string, string> = {}): string | undefined {
  const r = run([argv0, "--version"], { env });
  return r.ok ? r.stdout.split("\n")[0].trim() : undefined;
}

const isVersion = (line: string | undefined, version: QemuVersion) =>
  line !== undefined && new RegExp(`version ${version.replace(".", "\\.")}[.\\s]`).test(line);

/** Makes `version` ready to run; a string says why it cannot. */
export function ensureQemuBinary(version: QemuVersion): QemuBinary | string {
  return version === "7.2" ? ensureQemu72() : ensureQemu10();
}

/** Debian bookworm's qemu-system-x86 (apt-get install when missing). */
function ensureQemu72(): QemuBinary | string {
  let line = versionLineOf(SYSTEM_QEMU);
  if (line === undefined) {
    if (!run(["which", "apt-get"]).ok) return `${SYSTEM_QEMU} is not installed and apt-get is not available`;
    note("qemu: installing Debian's qemu-system-x86 (apt-get)…");
    const ok = apt(["update", "-q"]) &&
      apt(["install", "-y", "-q", "--no-install-recommends", "qemu-system-x86"]);
    line = versionLineOf(SYSTEM_QEMU);
    if (!ok || line === undefined) return "apt-get could not install qemu-system-x86";
  }
  if (!isVersion(line, "7.2")) return `the system's ${SYSTEM_QEMU} is "${line}", not 7.2`;
  return { version: "7.2", versionLine: line, argv: [SYSTEM_QEMU], env: {} };
}

/** QEMU 10.0 from bookworm-backports, unpacked into the cache prefix. */
function ensureQemu10(): QemuBinary | string {
  const prefix = qemu10Prefix();
  const binary = `${prefix}/usr/bin/qemu-system-x86_64`;
  const env = { QEMU_MODULE_DIR: `${prefix}/usr/lib/x86_64-linux-gnu/qemu` };
  const ready = (line: string): QemuBinary => ({
    version: "10.0",
    versionLine: line,
    argv: [binary, "-L", `${prefix}/usr/share/qemu`],
    env,
  });
  let line = existsSync(binary) ? versionLineOf(binary, env) : undefined;
  if (isVersion(line, "10.0")) return ready(line!);
  for (const tool of ["apt-get", "apt-cache", "dpkg", "dpkg-deb", "ldd"]) {
    if (!run(["which", tool]).ok) return `${tool} is not available (Debian's backports build is used)`;
  }
  if (!existsSync(binary)) {
    let failed: string | undefined;
    try {
      failed = unpackQemu10(prefix);
    } catch (error) {
      failed = (error as Error).message;
    }
    if (failed) return failed;
  }
  const missing = missingLibraries(binary);
  if (missing.length > 0) {
    const failed = installLibraries(prefix, missing);
    if (failed) return failed;
  }
  line = versionLineOf(binary, env);
  if (!isVersion(line, "10.0")) {
    const r = run([binary, "--version"], { env });
    return `${binary} --version does not report 10.0 (remove ${prefix} to fetch it again): ${r.output.slice(0, 400)}`;
  }
  return ready(line!);
}

/** The backports suite of this Debian release, e.g. "bookworm-backports". */
function backportsSuite(): string {
  const match = /^VERSION_CODENAME=(\S+)$/m.exec(readFileSync("/etc/os-release", "utf8"));
  return `${match?.[1] ?? "bookworm"}-backports`;
}

/** apt's source files: /etc/apt/sources.list and sources.list.d/*.{list,sources}. */
function aptSourceFiles(): string[] {
  const dir = "/etc/apt/sources.list.d";
  const files = existsSync(dir)
    ? readdirSync(dir).filter((f) => f.endsWith(".list") || f.endsWith(".sources")).map((f) => `${dir}/${f}`)
    : [];
  return [...(existsSync("/etc/apt/sources.list") ? ["/etc/apt/sources.list"] : []), ...files];
}

/**
 * Adds `<codename>-backports main` to apt's sources when no entry names it, with the mirror
 * (and keyring) of the system's own `<codename>` entry; returns what it did.
 */
function ensureBackportsSource(suite: string): string {
  const codename = suite.replace(/-backports$/, "");
  let mirror: string | undefined, signedBy: string | undefined;
  for (const file of aptSourceFiles()) {
    const text = readFileSync(file, "utf8");
    if (file.endsWith(".sources")) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, "mi").exec(stanza)?.[1].trim();
        if (/^\s*Enabled:\s*no/mi.test(stanza)) continue;
        const suites = field("Suites")?.split(/\s+/) ?? [];
        if (suites.includes(suite)) return `apt already has ${suite} (${file})`;
        if (!mirror && suites.includes(codename) && /^deb$/m.test(field("Types") ?? "")) {
          mirror = field("URIs")?.split(/\s+/)[0];
          signedBy = field("Signed-By");
        }
      }
    } else {
      for (const raw of text.split("\n")) {
        const line = raw.replace(/#.*/, "").trim();
        const options = /\[([^\]]*)\]/.exec(line)?.[1] ?? "";
        const words = line.replace(/\[[^\]]*\]/, "").trim().split(/\s+/);
        if (words[0] !== "deb") continue;
        if (words[2] === suite) return `apt already has ${suite} (${file})`;
        if (!mirror && words[2] === codename) {
          mirror = words[1];
          signedBy = /signed-by=(\S+)/.exec(options)?.[1];
        }
      }
    }
  }
  mirror ??= "http://deb.debian.org/debian";
  const file = `/etc/apt/sources.list.d/${suite}.list`;
  writeFileSync(file, `deb ${signedBy ? `[signed-by=${signedBy}] ` : ""}${mirror} ${suite} main\n`);
  return `added ${file} (${mirror} ${suite} main)`;
}

/** Each package's 10.0 version known to apt (`apt-cache madison`). */
function versions10(): Map<string, string> {
  const found = new Map<string, string>();
  for (const line of run(["apt-cache", "madison", ...PACKAGES_10]).stdout.split("\n")) {
    const [pkg, version] = line.split("|").map((s) => s.trim());
    if (PACKAGES_10.includes(pkg) && /^(\d+:)?10\.0\./.test(version ?? "") && !found.has(pkg)) {
      found.set(pkg, version);
    }
  }
  return found;
}

/** apt-get download + dpkg -x of the three packages into `prefix`; a string = why not. */
function unpackQemu10(prefix: string): string | undefined {
  let versions = versions10();
  if (versions.size < PACKAGES_10.length) {
    const suite = backportsSuite();
    note(`qemu: QEMU 10.0 from ${suite}: ${ensureBackportsSource(suite)}; apt-get update…`);
    if (!apt(["update", "-q"])) return "apt-get update failed";
    versions = versions10();
    if (versions.size < PACKAGES_10.length) {
      return `apt knows no 10.0 version of ${PACKAGES_10.filter((p) => !versions.has(p)).join(", ")} ` +
        `(apt-cache madison ${PACKAGES_10.join(" ")}; is ${suite} reachable?)`;
    }
  }
  const partial = `${prefix}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(`${partial}/root`, { recursive: true, mode: 0o755 });
  const wanted = PACKAGES_10.map((p) => `${p}=${versions.get(p)}`);
  note(`qemu: apt-get download ${wanted.join(" ")} → ${prefix}`);
  if (!apt(["download", "-q", "-o", "APT::Sandbox::User=root", ...wanted], partial)) {
    return `apt-get download ${wanted.join(" ")} failed`;
  }
  const debs = readdirSync(partial).filter((f) => f.endsWith(".deb"));
  for (const deb of debs) {
    const r = run(["dpkg", "-x", `${partial}/${deb}`, `${partial}/root`]);
    if (!r.ok) return `dpkg -x ${deb} failed: ${r.output}`;
  }
  const x86 = debs.find((f) => f.startsWith("qemu-system-x86_"));
  if (!x86) return `apt-get download gave no qemu-system-x86 package (${debs.join(", ")})`;
  const depends = run(["dpkg-deb", "-f", `${partial}/${x86}`, "Depends"]).stdout.trim();
  writeFileSync(`${partial}/root/DEPENDS`, depends + "\n");
  writeFileSync(`${partial}/root/PACKAGES`, wanted.join("\n") + "\n");
  rmSync(prefix, { recursive: true, force: true });
  renameSync(`${partial}/root`, prefix);
  rmSync(partial, { recursive: true, force: true });
  return undefined;
}

/** Shared libraries `ldd` cannot find for `binary`. */
function missingLibraries(binary: string): string[] {
  return run(["ldd", binary]).stdout.split("\n").filter((l) => l.includes("not found"))
    .map((l) => l.trim().split(/\s+/)[0]);
}

/** `apt-get satisfy` the package's library Depends (backports allowed); a string = why it failed. */
function installLibraries(prefix: string, missing: string[]): string | undefined {
  const depends = existsSync(`${prefix}/DEPENDS`) ? readFileSync(`${prefix}/DEPENDS`, "utf8").trim() : "";
  const libraries = depends.split(/,\s*/).filter((d) => d && !/^(qemu-|seabios|ipxe-qemu)/.test(d)).join(", ");
  if (!libraries) return `libraries missing (${missing.join(", ")}) and no Depends recorded in ${prefix}`;
  note(`qemu: QEMU 10.0 lacks ${missing.join(", ")}: apt-get satisfy "${libraries}"`);
  const ok = apt(["satisfy", "-y", "-q", "--no-install-recommends", libraries]) ||
    apt(["satisfy", "-y", "-q", "--no-install-recommends", "-t", backportsSuite(), libraries]);
  const still = missingLibraries(`${prefix}/usr/bin/qemu-system-x86_64`);
  if (!ok || still.length > 0) return `libraries still missing after apt-get satisfy: ${still.join(", ") || "?"}`;
  return undefined;
}

/** What kind of guest {@link bareGuestArgv} starts. */
export interface GuestKind {
  /** "none" (default): no devices, no vCPU; "pc": an i440FX PC running SeaBIOS without a disk (several RAM blocks). */
  machine?: "none" | "pc";
  /** Started paused (`-S`; default true), or running. */
  paused?: boolean;
}

/**
 * The command line of a guest (`-machine none` by default, paused with `-S`): its main RAM
 * is the file `ram` of `size` bytes (`backendOptions`: more options of the
 * memory-backend-file, e.g. ",align=2M"), controlled over QMP at the unix socket `qmp`.
 */
export function bareGuestArgv(
  binary: QemuBinary,
  ram: string,
  size: number,
  qmp: string,
  backendOptions = "",
  kind: GuestKind = {},
): string[] {
  const machine = kind.machine ?? "none";
  return [
    ...binary.argv,
    "-machine",
    `${machine},memory-backend=mem`,
    ...(machine === "pc" ? ["-m", `${size / 2 ** 20}M`] : []),
    "-object",
    `memory-backend-file,id=mem,size=${size},mem-path=${ram},share=on${backendOptions}`,
    "-nodefaults",
    "-display",
    "none",
    ...(kind.paused === false ? [] : ["-S"]),
    "-accel",
    "tcg,tb-size=16",
    "-qmp",
    `unix:${qmp},server=on,wait=off`,
  ];
}
