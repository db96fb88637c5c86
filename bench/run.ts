/**
 * The benchmark suite: every case under Deno and Bun, interleaved (deno, bun, deno, bun…),
 * repeated, summarised (median, min–max) and saved.
 *
 *   npm run bench          # = deno run -A bench/run.ts          (~10 min on 2 cores)
 *   npm run bench:quick    # = deno run -A bench/run.ts --quick  (< 1 min)
 *   deno run -A bench/run.ts --with-qemu              # adds real QEMU 7.2 and 10.0 multifd (root; a few minutes)
 *   bun bench/run.ts --only stream,calls --reps 7
 *
 * Parts (`--only` picks some):
 *   stream   one TCP stream (4 GiB; quick 512 MiB) to the native sink, 256 KiB writes: the
 *            native reference (Zig), the module's async and Worker/sync writes, plain and
 *            zero-copy, and the runtime's own sockets (bench/stream.ts); 5 repetitions
 *   calls    ns per send call from JS vs the same sendmsg from Zig (bench/call_overhead.ts)
 *   multifd  region transfers over 1/2/4/8 channels (bench/multifd.ts), and with --with-qemu
 *            the same migration done by QEMU, with ours/QEMU ratios
 *   memory   the module's own memory with a 1 GiB and an 8 GiB region (bench/memory.ts);
 *            not in --quick (both sides hold the region: ~17 GiB of RAM)
 *
 * Each run prints one JSON line per case run and per summary on stdout, then a Markdown
 * report; both are saved as bench/results/<date>-<suite>.{jsonl,md}; the multifd chart goes
 * to bench/results/multifd.svg (quick runs: multifd-quick.svg). Numbers vary ±30% between
 * runs on a loaded VM: compare within one run only.
 * @module
 */
import { parseArgs } from "node:util";
import { DEFAULT_CHART_PATH, writeChart } from "./chart.ts";
import { defaultMemoryOptions, runMemorySuite } from "./memory.ts";
import { defaultMultifdOptions, runMultifdSuite } from "./multifd.ts";
import { NATIVE_STREAM_CASES, STREAM_CASES } from "./stream.ts";
import { LineChild } from "../dev/child.ts";
import { ROOT } from "../dev/root.ts";
import { currentRuntime, type Runtime, RUNTIMES, scriptArgv } from "../dev/runtime.ts";
import { err as note, out } from "../util/output.ts";
import { runMain } from "./lib/proc.ts";
import { nativeProgram } from "./lib/native.ts";
import { type BenchRecord, environment, markdownReport, ResultsFiles, summaries } from "./lib/report.ts";

const STREAM_SCRIPT = new URL("./stream.ts", import.meta.url);
const CALLS_SCRIPT = new URL("./call_overhead.ts", import.meta.url);
const PARTS = ["stream", "calls", "multifd", "memory"] as const;
type Part = typeof PARTS[number];

const USAGE = `usage: run.ts [--quick] [--with-qemu] [--only stream,calls,multifd,memory] [--reps N]
              [--stream-mib N] [--multifd-mib N] [--multifd-reps N] [--runtimes deno,bun] [--no-save]
  --quick          small sizes, 1 repetition, a multifd subset (< 1 min)
  --with-qemu      also migrate with real QEMU 7.2 and 10.0 (root; installs Debian's 7.2 with apt-get and unpacks
                   10.0 from bookworm-backports, see bench/README.md)
  --reps N         repetitions of the stream and call cases (default 5; quick 1)
  --multifd-reps N repetitions of each multifd configuration (default 3; quick 1)`;

/** Runs a bench script to its end; resolves with its JSON lines, and the error it reported, if any. */
async function runLines(argv: string[], label: string): Promise<{ records: BenchRecord[]; error?: string }> {
  const records: BenchRecord[] = [];
  const child = new LineChild(argv, { label });
  try {
    for (;;) {
      let line: string;
      try {
        line = await child.nextLine(600_000);
      } catch (error) {
        // The end of its output; without any record, the reason (its stderr) is the error.
        return records.length > 0 ? { records } : { records, error: (error as Error).message };
      }
      if (!line.startsWith("{")) continue;
      const record = JSON.parse(line);
      if (typeof record.error === "string") return { records, error: record.error };
      records.push(record);
    }
  } finally {
    await child.kill();
  }
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        quick: { type: "boolean", default: false },
        "with-qemu": { type: "boolean", default: false },
        only: { type: "string" },
        reps: { type: "string" },
        "stream-mib": { type: "string" },
        "multifd-mib": { type: "string" },
        "multifd-reps": { type: "string" },
        runtimes: { type: "string", default: RUNTIMES.join(",") },
        "no-save": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (error) {
    note(`run.ts: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) return out(USAGE), 0;
  const quick = values.quick;
  const parts = (values.only ?? PARTS.filter((p) => !(quick && p === "memory")).join(",")).split(",") as Part[];
  const runtimes = values.runtimes.split(",") as Runtime[];
  const reps = Number(values.reps ?? (quick ? 1 : 5));
  const streamBytes = Number(values["stream-mib"] ?? (quick ? 512 : 4096)) * 2 ** 20;
  const calls = quick ? 10_000 : 100_000;
  const multifd = defaultMultifdOptions(quick);
  multifd.runtimes = runtimes;
  multifd.withQemu = values["with-qemu"];
  if (values["multifd-mib"]) multifd.sizeBytes = Number(values["multifd-mib"]) * 2 ** 20;
  if (values["multifd-reps"]) multifd.reps = Number(values["multifd-reps"]);
  if (
    !parts.every((p) => PARTS.includes(p)) || !runtimes.every((r) => RUNTIMES.includes(r)) ||
    !(reps >= 1) || !(streamBytes > 0) || !(multifd.sizeBytes > 0) || !(multifd.reps >= 1)
  ) {
    note(`run.ts: bad arguments\n${USAGE}`);
    return 2;
  }

  const started = performance.now();
  const haveNative = nativeProgram("zc-ref-sink") !== undefined && nativeProgram("zc-ref-send") !== undefined;
  const env = environment({
    suite: quick ? "quick" : "full",
    driver: currentRuntime,
    "stream size": `${streamBytes / 2 ** 20} MiB, 256 KiB writes, ${reps} repetition(s)`,
    "call overhead": `${calls} 1-byte sends / ${calls * 10} empty sends per method, ${reps} repetition(s)`,
    "multifd size": `${multifd.sizeBytes / 2 ** 20} MiB random data, ${multifd.reps} repetition(s)`,
  });
  if (!haveNative) env.note = "native reference programs unavailable: stream and call parts skipped";
  const files = values["no-save"] ? undefined : new ResultsFiles(quick ? "quick" : "bench");
  const records: BenchRecord[] = [];
  const emit = (record: BenchRecord) => {
    records.push(record);
    files?.append(record);
    out(JSON.stringify(record));
  };
  const attempt = async (label: string, fields: BenchRecord, argv: string[]) => {
    note(`bench: ${label}`);
    const started = performance.now();
    const { records, error } = await runLines(argv, label);
    // Wall time of the whole process (set-up included), when it ran one case.
    const wall = records.length === 1 ? { wallSeconds: Math.round(performance.now() - started) / 1000 } : {};
    for (const record of records) emit({ ...record, ...fields, ...wall });
    if (error !== undefined) emit({ ...fields, error });
  };

  if (parts.includes("stream") && haveNative) {
    for (let rep = 0; rep < reps; rep++) {
      for (const name of STREAM_CASES) {
        const who = NATIVE_STREAM_CASES.includes(name) ? [runtimes[0]] : runtimes;
        for (const runtime of who) {
          const label = NATIVE_STREAM_CASES.includes(name) ? "native" : runtime;
          await attempt(
            `stream rep ${rep + 1}/${reps} ${name} ${label}`,
            { bench: "stream", case: name, runtime: label, rep },
            scriptArgv(runtime, STREAM_SCRIPT, ["--case", name, "--bytes", String(streamBytes)]),
          );
        }
      }
    }
  }
  if (parts.includes("calls") && haveNative) {
    for (let rep = 0; rep < reps; rep++) {
      await attempt(
        `calls rep ${rep + 1}/${reps} native`,
        { bench: "calls", runtime: "native", rep },
        scriptArgv(runtimes[0], CALLS_SCRIPT, ["--method", "native", "--calls", String(calls)]),
      );
      for (const runtime of runtimes) {
        await attempt(
          `calls rep ${rep + 1}/${reps} ${runtime}`,
          { bench: "calls", runtime, rep },
          scriptArgv(runtime, CALLS_SCRIPT, ["--method", "js", "--calls", String(calls)]),
        );
      }
    }
  }
  if (parts.includes("multifd")) Object.assign(env, await runMultifdSuite(multifd, emit));
  if (parts.includes("memory")) {
    const memory = defaultMemoryOptions();
    memory.runtimes = runtimes;
    env.memory = `regions of ${memory.sizesMiB.join(" and ")} MiB, 1 repetition`;
    await runMemorySuite(memory, emit);
  }

  const sums = summaries(records);
  for (const s of sums) emit(s);
  env["suite time"] = `${((performance.now() - started) / 1000).toFixed(0)} s`;
  const report = markdownReport(`Benchmarks (${quick ? "quick" : "full"})`, env, sums);
  out("\n" + report);
  if (files) {
    files.writeMarkdown(report);
    const chart = writeChart(records, quick ? DEFAULT_CHART_PATH.replace(/\.svg$/, "-quick.svg") : DEFAULT_CHART_PATH);
    const where = (p: string) => p.replace(ROOT, "");
    note(
      `bench: saved ${where(files.jsonlPath)} and ${where(files.markdownPath)}${
        chart ? `, chart ${where(chart)}` : ""
      } (${env["suite time"]})`,
    );
  }
  const failed = records.filter((r) => r.error !== undefined || r.verified === false);
  if (failed.length > 0) note(`bench: ${failed.length} case run(s) failed or were not verified (see "error")`);
  return failed.length > 0 ? 1 : 0;
}

await runMain("run.ts", main);
