/**
 * Where the native library is looked for, in order:
 * 1. `$ZEROCOPY_MULTIFD_LIB` (an explicit path; nothing else is tried when it is set),
 * 2. `zig-out/lib/libzerocopy_multifd.so` (a local `zig build`, the freshest when present),
 * 3. `prebuilt/linux-x64/libzerocopy_multifd.so` (shipped in the npm package).
 *
 * @module
 */
import { existsSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { ZeroCopyMultifdError } from "../src/errors.ts";

/**
 * Name of the environment variable that points the module at a specific
 * `libzerocopy_multifd.so`; when set, no other location is tried.
 */
export const LIBRARY_ENV = "ZEROCOPY_MULTIFD_LIB";
const LIBRARY_FILE = "libzerocopy_multifd.so";

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
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new ZeroCopyMultifdError(
      `zerocopy-multifd supports linux-x64 only (this is ${process.platform}-${process.arch})`,
    );
  }
  const explicit = process.env[LIBRARY_ENV];
  if (explicit) return [explicit];
  const root = new URL("../", import.meta.url);
  return [
    fileURLToPath(new URL(`zig-out/lib/${LIBRARY_FILE}`, root)),
    fileURLToPath(new URL(`prebuilt/linux-x64/${LIBRARY_FILE}`, root)),
  ];
}

/** The first existing candidate path; throws NativeLibraryNotFoundError when none exists. */
export function findLibrary(): string {
  const tried = candidates();
  const found = tried.find((path) => existsSync(path));
  if (!found) throw new NativeLibraryNotFoundError(tried);
  return found;
}
