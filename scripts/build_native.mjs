#!/usr/bin/env node
// Builds zig/ into zig-out/lib/libzerocopy_multifd.so (any x86-64) and
// libzerocopy_multifd_x86_64_v3.so (AVX2 and AES-NI CPUs; ffi/library_path.ts picks) with the pinned Zig.
//
// The Zig version is pinned in one place: package.json "config.zigVersion". A `zig` on
// PATH of exactly that version is used; otherwise PyPI's official `ziglang` package is
// installed into the project-local venv .zig/venv and run as `python3 -m ziglang`.
//
//   node scripts/build_native.mjs              build
//   node scripts/build_native.mjs --if-needed  skip when a prebuilt library is shipped (npm install of the package)
//   node scripts/build_native.mjs --prebuilt   build, then copy into prebuilt/linux-x64/ (npm pack)
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const zigVersion = pkg.config.zigVersion;
const libNames = ["libzerocopy_multifd.so", "libzerocopy_multifd_x86_64_v3.so"];
const prebuilt = join(root, "prebuilt", "linux-x64", libNames[0]);
const built = join(root, "zig-out", "lib", libNames[0]);
const args = new Set(process.argv.slice(2));

if (args.has("--if-needed") && existsSync(prebuilt)) {
  console.log(`zerocopy-multifd: using the prebuilt ${prebuilt}`);
  process.exit(0);
}

function output(cmd, cmdArgs) {
  const r = spawnSync(cmd, cmdArgs, { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function findZig() {
  if (output("zig", ["version"]) === zigVersion) return ["zig"];
  const venv = join(root, ".zig", "venv");
  const python = join(venv, "bin", "python");
  if (output(python, ["-m", "ziglang", "version"]) !== zigVersion) {
    console.log(`zerocopy-multifd: installing Zig ${zigVersion} (PyPI ziglang) into ${venv}`);
    execFileSync("python3", ["-m", "venv", venv], { stdio: "inherit" });
    execFileSync(python, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", `ziglang==${zigVersion}`], {
      stdio: "inherit",
    });
  }
  return [python, "-m", "ziglang"];
}

const [zig, ...zigArgs] = findZig();
execFileSync(zig, [...zigArgs, "build", "--summary", "none"], { cwd: root, stdio: "inherit" });
console.log(`zerocopy-multifd: built ${libNames.join(", ")} in ${dirname(built)} with Zig ${zigVersion}`);

if (args.has("--prebuilt")) {
  mkdirSync(dirname(prebuilt), { recursive: true });
  for (const name of libNames) copyFileSync(join(dirname(built), name), join(dirname(prebuilt), name));
  console.log(`zerocopy-multifd: copied to ${dirname(prebuilt)}`);
}
