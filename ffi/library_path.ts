/**
 * Where the native library is looked for, in order:
 * 1. `$ZEROCOPY_MULTIFD_LIB` (an explicit path; nothing else is tried when it is set),
 * 2. `zig-out/lib/` (a local `zig build`, the freshest when present),
 * 3. `prebuilt/linux-x64/` (shipped in the npm package).
 *
 * In each directory, on a CPU with every x86-64-v3 feature (AVX2, BMI2, FMA, …: 2013 on) and
 * AES-NI and PCLMULQDQ (which every such CPU has), the build for it
 * (`libzerocopy_multifd_x86_64_v3.so`: a faster region checksum, and AES in hardware for
 * encrypted channels) comes first; `libzerocopy_multifd.so` runs on any x86-64.
 *
 * @module
 */
import { ZeroCopyMultifdError } from "../src/errors.ts";
import { runtime } from "./runtime.ts";

/**
 * What the lookup needs of the system. Every channel Worker loads the library, so under Deno
 * this avoids `node:*`: the first `node:` import of a Worker sets up Deno's Node layer, about
 * 20 ms of a Worker's start, paid per channel at the start of every transfer. Bun's
 * `node:*` modules are its own and cheap.
 */
interface Host {
  platform: string;
  arch: string;
  env(name: string): string | undefined;
  exists(path: string): boolean;
  readText(path: string): string;
}

const host: Host = runtime === "deno"
  ? {
    platform: Deno.build.os,
    arch: Deno.build.arch === "x86_64" ? "x64" : Deno.build.arch,
    env: (name) => Deno.env.get(name),
    exists: (path) => {
      try {
        Deno.statSync(path);
        return true;
      } catch {
        return false;
      }
    },
    readText: (path) => Deno.readTextFileSync(path),
  }
  : await (async () => {
    const { existsSync, readFileSync } = await import("node:fs");
    const { default: process } = await import("node:process");
    return {
      platform: process.platform,
      arch: process.arch,
      env: (name: string) => process.env[name],
      exists: existsSync,
      readText: (path: string) => readFileSync(path, "utf8"),
    };
  })();

/** A file: URL as a path (what node:url's fileURLToPath does for the URLs made here). */
function pathOf(url: URL): string {
  if (url.protocol !== "file:") throw new ZeroCopyMultifdError(`the native library must be a local file, not ${url}`);
  return decodeURIComponent(url.pathname);
}

/**
 * Name of the environment variable that points the module at a specific
 * `libzerocopy_multifd.so`; when set, no other location is tried.
 */
export const LIBRARY_ENV = "ZEROCOPY_MULTIFD_LIB";
const LIBRARY_FILE = "libzerocopy_multifd.so";
const V3_LIBRARY_FILE = "libzerocopy_multifd_x86_64_v3.so";
/** The /proc/cpuinfo flags of the x86-64-v3 level ("abm" is LZCNT), plus AES-NI and carry-less multiply. */
const X86_64_V3_FLAGS = ["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave", "aes", "pclmulqdq"];

/** Whether this CPU runs the x86-64-v3 build (v3, AES-NI, PCLMULQDQ; false when /proc/cpuinfo cannot be read). */
export function cpuIsX86_64V3(cpuinfo?: string): boolean {
  let text = cpuinfo;
  try {
    text ??= host.readText("/proc/cpuinfo");
  } catch {
    return false;
  }
  const flags = new Set(/^flags\s*:(.*)$/m.exec(text)?.[1].trim().split(/\s+/) ?? []);
  return X86_64_V3_FLAGS.every((flag) => flags.has(flag));
}

/** Thrown when no loadable library is found; the message says what was tried and the fix. */
export class NativeLibraryNotFoundError extends ZeroCopyMultifdError {
  /** Always "NativeLibraryNotFoundError". */
  override name = "NativeLibraryNotFoundError";
  /** `tried`: the paths looked at, in order; the message lists them too. */
  constructor(readonly tried: string[]) {
    super(
      `zerocopy-multifd: native library not found (tried: ${tried.join(", ")}). ` +
        `Build it with \`npm run build\` (needs the pinned Zig, installed by \`npm install\`), ` +
        `or set ${LIBRARY_ENV} to the path of ${LIBRARY_FILE}.`,
    );
  }
}

function candidates(): string[] {
  if (host.platform !== "linux" || host.arch !== "x64") {
    throw new ZeroCopyMultifdError(
      `zerocopy-multifd supports linux-x64 only (this is ${host.platform}-${host.arch})`,
    );
  }
  const explicit = host.env(LIBRARY_ENV);
  if (explicit) return [explicit];
  const root = new URL("../", import.meta.url);
  const files = cpuIsX86_64V3() ? [V3_LIBRARY_FILE, LIBRARY_FILE] : [LIBRARY_FILE];
  return ["zig-out/lib/", "prebuilt/linux-x64/"].flatMap((dir) =>
    files.map((file) => pathOf(new URL(dir + file, root)))
  );
}

/** The first existing candidate path; throws NativeLibraryNotFoundError when none exists. */
export function findLibrary(): string {
  const tried = candidates();
  const found = tried.find((path) => host.exists(path));
  if (!found) throw new NativeLibraryNotFoundError(tried);
  return found;
}
