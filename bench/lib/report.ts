/**
 * Statistics over repeated runs (median, min–max), the Markdown tables of every benchmark,
 * and the results files under bench/results/ (one .jsonl and one .md per run of a driver).
 * @module
 */
import { spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { ROOT } from "../../dev/root.ts";
import { runtimeBinary, RUNTIMES } from "../../dev/runtime.ts";
import { round } from "../../util/format.ts";
import { THREAD_KINDS, threadCpuField } from "./threads.ts";
import { DEFAULT_PAGES_PER_PACKET, PAGE_SIZE } from "../../src/multifd/wire.ts";

/** One JSON line: a run of a case, or a summary. */
export type BenchRecord = Record<string, unknown>;

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: number[]): Spread | undefined {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return undefined;
  const mid = xs.length >> 1;
  const median = xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
  return { median, min: xs[0], max: xs[xs.length - 1], n: xs.length };
}

/** The medians of each kind of thread's CPU s/GB in `rs` (fields of `role`), as "workers / engine / main". */
export function threadCpuCell(rs: BenchRecord[], role: string): string {
  return THREAD_KINDS.map((kind) => medianCell(rs, threadCpuField(role, kind))).join(" / ");
}

/** The median of one numeric field over `rs`, three decimals ("–": none). */
export function medianCell(rs: BenchRecord[], field: string): string {
  return spread(values(rs, field))?.median.toFixed(3) ?? "–";
}

/** "1.23 (1.10–1.40)"; one value: "1.23"; none: "–". */
export function formatSpread(s: Spread | undefined, digits = 2): string {
  if (!s) return "–";
  const f = (v: number) => v.toFixed(digits);
  return s.n === 1 ? f(s.median) : `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

export function markdownTable(headers: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(headers), line(headers.map(() => "---")), ...rows.map(line)].join("\n");
}

/** Groups records by a key, in first-seen order. */
export function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(item);
  }
  return groups;
}

const num = (r: BenchRecord, field: string) => Number(r[field]);
const values = (rs: BenchRecord[], field: string) => rs.map((r) => num(r, field)).filter((v) => !Number.isNaN(v));
const isRun = (r: BenchRecord) => r.summary !== true && r.error === undefined;

// --- stream ---

/**
 * A stream run's GB/s over the native reference's of the same repetition (the runs of one
 * repetition follow each other, so the ratio survives the VM's drift): zero-copy cases
 * against native-zerocopy, the others against native-plain.
 */
function streamVsNative(run: BenchRecord, runs: BenchRecord[]): number | undefined {
  if (run.runtime === "native") return undefined;
  const reference = /zerocopy/i.test(String(run.case)) ? "native-zerocopy" : "native-plain";
  const native = runs.find((r) => r.case === reference && r.rep === run.rep);
  return native && num(native, "GBps") > 0 ? num(run, "GBps") / num(native, "GBps") : undefined;
}

export function streamSummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "stream" && isRun(r));
  return [...groupBy(runs, (r) => `${r.case}/${r.runtime}`).values()].map((rs) => ({
    bench: "stream",
    summary: true,
    case: rs[0].case,
    runtime: rs[0].runtime,
    bytes: rs[0].bytes,
    GBps: spread(values(rs, "GBps")),
    vsNative: spread(rs.map((r) => streamVsNative(r, runs)).filter((v): v is number => v !== undefined)),
    cpuSecondsPerGB: spread(values(rs, "cpuSecondsPerGB")),
    sinkCpuSecondsPerGB: spread(values(rs, "sinkCpuSecondsPerGB")),
    zerocopyCopiedFraction: rs[0].zerocopySends
      ? num(rs[0], "zerocopyCopied") / num(rs[0], "zerocopySends")
      : undefined,
    verified: rs.every((r) => r.verified !== false),
  }));
}

export function streamTable(summaries: BenchRecord[]): string {
  const rows = summaries.filter((s) => s.bench === "stream" && s.summary).map((s) => [
    String(s.case),
    String(s.runtime),
    formatSpread(s.GBps as Spread, 2),
    s.vsNative ? formatSpread(s.vsNative as Spread, 2) : "",
    formatSpread(s.cpuSecondsPerGB as Spread, 3),
    formatSpread(s.sinkCpuSecondsPerGB as Spread, 3),
    s.zerocopyCopiedFraction === undefined ? "" : `${Math.round(Number(s.zerocopyCopiedFraction) * 100)}%`,
    String((s.GBps as Spread | undefined)?.n ?? 0),
    s.verified ? "yes" : "NO",
  ]);
  return markdownTable(
    [
      "sender",
      "runtime",
      "GB/s",
      "÷ native, per rep",
      "sender CPU s/GB",
      "sink CPU s/GB",
      "zc copied",
      "runs",
      "all bytes",
    ],
    rows,
  );
}

// --- per-call overhead ---

/** Module methods whose extra cost over a raw FFI call of the same send is reported. */
const MODULE_CALLS = ["writeRangesSync-1B", "writevSync-1B", "writev-1B"];

export function callSummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "calls" && isRun(r));
  const nativeMedian = (method: string) =>
    spread(values(runs.filter((r) => r.method === method && r.runtime === "native"), "cpuNsPerCall"))?.median;
  /** Per repetition: this method's CPU ns/call minus ffi-1B's in the same process (paired). */
  const overFfi = (rs: BenchRecord[]) =>
    spread(rs.flatMap((r) => {
      const base = runs.find((b) => b.method === "ffi-1B" && b.runtime === r.runtime && b.rep === r.rep);
      return base ? [num(r, "cpuNsPerCall") - num(base, "cpuNsPerCall")] : [];
    }));
  return [...groupBy(runs, (r) => `${r.method}/${r.runtime}`).values()].map((rs) => {
    const method = String(rs[0].method);
    const isNative = rs[0].runtime === "native";
    const baseline = method.endsWith("-empty") ? "native-empty" : "native-1B";
    const cpuNs = spread(values(rs, "cpuNsPerCall"));
    const base = nativeMedian(baseline);
    return {
      bench: "calls",
      summary: true,
      method,
      runtime: rs[0].runtime,
      nsPerCall: spread(values(rs, "nsPerCall")),
      cpuNsPerCall: cpuNs,
      ...(!isNative && { baseline, overNativeCpuNs: cpuNs && base !== undefined ? cpuNs.median - base : undefined }),
      ...(MODULE_CALLS.includes(method) && { overRawFfiCpuNs: overFfi(rs) }),
    };
  });
}

export function callTable(summaries: BenchRecord[]): string {
  const rows = summaries.filter((s) => s.bench === "calls" && s.summary).map((s) => [
    String(s.method),
    String(s.runtime),
    formatSpread(s.nsPerCall as Spread, 0),
    formatSpread(s.cpuNsPerCall as Spread, 0),
    s.overNativeCpuNs === undefined ? "" : `${Math.round(Number(s.overNativeCpuNs))} (vs ${s.baseline})`,
    formatSpread(s.overRawFfiCpuNs as Spread | undefined, 0).replace(/^–$/, ""),
  ]);
  return markdownTable(
    ["call", "runtime", "ns/call (wall)", "CPU ns/call", "CPU ns over native", "CPU ns over raw FFI (same process)"],
    rows,
  );
}

// --- multifd and QEMU ---

/** "off", "on", or "always" (zero-copy without the fallback of channels the kernel copies for). */
export const zerocopyMode = (r: BenchRecord) => !r.zerocopy ? "off" : r.zerocopyAlways ? "always" : "on";

/**
 * A multifd case (config or record) with the default send buffer and zero-page detection on
 * random data: the one that stands for ours in comparisons (QEMU's guest RAM is random too).
 */
export const defaultVariant = (c: { sendBufferBytes?: unknown; zeroPages?: unknown; zeroShare?: unknown }) =>
  !c.sendBufferBytes && c.zeroPages !== false && !c.zeroShare;

export const multifdKey = (r: BenchRecord) =>
  `${r.hugePages ? "huge" : "4k"}/${zerocopyMode(r)}/${r.channels}/${r.runtime}/${r.sendBufferBytes ?? "default"}/${
    r.encrypt ?? "plain"
  }/${r.pagesPerPacket ?? "default"}/${r.zeroPages === false ? "no-zero-pages" : "zero-pages"}/${r.zeroShare ?? 0}`;

/** A case's packet payload in bytes: its `pagesPerPacket`, or the sender's default. */
export function packetBytes(pagesPerPacket: unknown): number {
  return Number(pagesPerPacket ?? DEFAULT_PAGES_PER_PACKET) * PAGE_SIZE;
}

/** What names a multifd case in every summary record: runtime, channels, zero-copy mode, page size. */
function caseFields(r: BenchRecord): BenchRecord {
  const { runtime, channels, zerocopy, zerocopyAlways, hugePages } = r;
  return { runtime, channels, zerocopy, zerocopyAlways, hugePages };
}

export function multifdSummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "multifd" && isRun(r));
  return [...groupBy(runs, multifdKey).values()].map((rs) => ({
    bench: "multifd",
    summary: true,
    ...caseFields(rs[0]),
    sendBufferBytes: rs[0].sendBufferBytes,
    encrypt: rs[0].encrypt,
    pagesPerPacket: rs[0].pagesPerPacket,
    zeroPages: rs[0].zeroPages,
    zeroShare: rs[0].zeroShare,
    bytes: rs[0].bytes,
    GBps: spread(values(rs, "GBps")),
    senderCpuSecondsPerGB: spread(values(rs, "senderCpuSecondsPerGB")),
    receiverCpuSecondsPerGB: spread(values(rs, "receiverCpuSecondsPerGB")),
    senderCpuByThread: threadCpuCell(rs, "sender"),
    receiverCpuByThread: threadCpuCell(rs, "receiver"),
    senderPeakRssMiB: spread(values(rs, "senderPeakRssMiB")),
    receiverPeakRssMiB: spread(values(rs, "receiverPeakRssMiB")),
    verified: rs.every((r) => r.verified === true),
  }));
}

export function multifdTable(summaries: BenchRecord[]): string {
  const rows = summaries.filter((s) => s.bench === "multifd" && s.summary).map((s) => [
    String(s.channels),
    zerocopyMode(s),
    s.hugePages ? "2 MiB" : "4 KiB",
    s.sendBufferBytes === -1 ? "auto" : s.sendBufferBytes ? `${Number(s.sendBufferBytes) / 1024} KiB` : "default",
    String(s.encrypt ?? "none"),
    `${packetBytes(s.pagesPerPacket) / 1024} KiB`,
    `${s.zeroPages === false ? "off" : "on"}, ${Number(s.zeroShare ?? 0)}%`,
    String(s.runtime),
    formatSpread(s.GBps as Spread, 2),
    formatSpread(s.senderCpuSecondsPerGB as Spread, 2),
    formatSpread(s.receiverCpuSecondsPerGB as Spread, 2),
    String(s.senderCpuByThread ?? "–"),
    String(s.receiverCpuByThread ?? "–"),
    formatSpread(s.senderPeakRssMiB as Spread, 0),
    formatSpread(s.receiverPeakRssMiB as Spread, 0),
    String((s.GBps as Spread | undefined)?.n ?? 0),
    s.verified ? "yes" : "NO",
  ]);
  return markdownTable(
    [
      "channels",
      "zero-copy",
      "pages",
      "send buffer",
      "encryption",
      "packet",
      "zero pages, share of data",
      "runtime",
      "GB/s",
      "sender CPU s/GB",
      "receiver CPU s/GB",
      "sender's: Workers / JS engine / main (medians)",
      "receiver's: Workers / JS engine / main",
      "sender peak RSS MiB",
      "receiver peak RSS MiB",
      "runs",
      "verified",
    ],
    rows,
  );
}

export function qemuSummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "qemu" && isRun(r));
  return [...groupBy(runs, (r) => String(r.config)).values()].map((rs) => ({
    bench: "qemu",
    summary: true,
    config: rs[0].config,
    qemuVersion: rs[0].qemuVersion,
    channels: rs[0].channels,
    zerocopy: rs[0].zerocopy,
    tls: rs[0].tls,
    bytes: rs[0].bytes,
    GBps: spread(values(rs, "GBps")),
    srcCpuSecondsPerGB: spread(values(rs, "srcCpuSecondsPerGB")),
    dstCpuSecondsPerGB: spread(values(rs, "dstCpuSecondsPerGB")),
    verified: rs.every((r) => r.verified === true),
  }));
}

const ratioOf = (a: unknown, b: unknown) => {
  const x = a as Spread | undefined, y = b as Spread | undefined;
  return x && y && y.median > 0 ? round(x.median / y.median) : undefined;
};

/**
 * ours/QEMU for every QEMU configuration and runtime: our median over QEMU's median for the
 * matching configuration (2 MiB pages, same channels, same zero-copy setting).
 */
export function qemuRatios(summaries: BenchRecord[]): BenchRecord[] {
  const ours = summaries.filter((s) =>
    s.bench === "multifd" && s.summary && s.hugePages && !s.zerocopyAlways && defaultVariant(s)
  );
  return summaries.filter((s) => s.bench === "qemu" && s.summary).flatMap((q) =>
    RUNTIMES.flatMap((runtime) => {
      const o = ours.find((o) =>
        o.runtime === runtime && o.channels === q.channels && o.zerocopy === q.zerocopy &&
        (o.encrypt !== undefined) === (q.tls === true)
      );
      return o
        ? [{
          bench: "qemu-ratio",
          summary: true,
          config: q.config,
          runtime,
          GBps: ratioOf(o.GBps, q.GBps),
          senderCpuSecondsPerGB: ratioOf(o.senderCpuSecondsPerGB, q.srcCpuSecondsPerGB),
          receiverCpuSecondsPerGB: ratioOf(o.receiverCpuSecondsPerGB, q.dstCpuSecondsPerGB),
        }]
        : [];
    })
  );
}

/**
 * The per-round pair records of one of our runs and the QEMU runs right after it (same
 * channels and zero-copy): ours/QEMU against each version, and, when every version ran,
 * against the better one of the round ("better multifd4": the highest GB/s of the versions
 * in that round; its receiver CPU ratio is against that same run's destination).
 */
export function pairRecords(ours: BenchRecord, theirs: BenchRecord[]): BenchRecord[] {
  if (ours.error !== undefined) return [];
  const pair = (against: string, config: string, q: BenchRecord, extra: BenchRecord = {}) => ({
    bench: "qemu-pair",
    runtime: ours.runtime,
    ours: [ours.zerocopyAlways && "zero-copy always", ours.encrypt, ours.encrypt && ours.zerocopy && "zero-copy"]
      .filter(Boolean).join(", ") || undefined,
    rep: ours.rep,
    channels: ours.channels,
    zerocopy: ours.zerocopy,
    against,
    config,
    GBps: Number(ours.GBps) / Number(q.GBps),
    receiverCpuSecondsPerGB: Number(ours.receiverCpuSecondsPerGB) / Number(q.dstCpuSecondsPerGB),
    ...extra,
  });
  const ok = theirs.filter((q) => q.error === undefined && Number(q.GBps) > 0);
  const records: BenchRecord[] = ok.map((q) => pair(String(q.qemuVersion ?? "QEMU"), String(q.config), q));
  if (theirs.length > 1 && ok.length === theirs.length) {
    const best = ok.reduce((a, b) => (Number(b.GBps) > Number(a.GBps) ? b : a));
    const base = String(best.config).replace(/^\S+ /, "");
    records.push(pair("better", `better ${base}`, best, { betterVersion: best.qemuVersion }));
  }
  return records;
}

/**
 * Ours/QEMU taken inside each round (ours, then QEMU at once, same channels and zero-copy):
 * the median of those per-round ratios, per runtime and configuration (per QEMU version,
 * and against the better version of each round).
 */
export function pairSummaries(records: BenchRecord[]): BenchRecord[] {
  const pairs = records.filter((r) => r.bench === "qemu-pair" && r.summary !== true);
  // Rows of one runtime and QEMU config together, in the order they first ran: 7.2, 10.0, better.
  const who = (p: BenchRecord) => `${p.runtime}${p.ours ? ` (${p.ours})` : ""}`;
  const base = (p: BenchRecord) => `${who(p)} ${String(p.config).replace(/^\S+ (?=multifd)/, "")}`;
  const groups = [...new Set(pairs.map(base))];
  const rank = (p: BenchRecord) => p.against === "better" ? Infinity : parseFloat(String(p.config)) || 0;
  const keys = [
    ...new Set(
      [...pairs].sort((a, b) => groups.indexOf(base(a)) - groups.indexOf(base(b)) || rank(a) - rank(b))
        .map((p) => `${who(p)} ${p.config}`),
    ),
  ];
  return keys.map((key) => {
    const group = pairs.filter((p) => `${who(p)} ${p.config}` === key);
    const { runtime, ours, config, channels, zerocopy, against } = group[0];
    const wins: Record<string, number> = {};
    for (const p of group) {
      if (p.betterVersion !== undefined) wins[String(p.betterVersion)] = (wins[String(p.betterVersion)] ?? 0) + 1;
    }
    return {
      bench: "qemu-pair",
      summary: true,
      runtime,
      ours,
      config,
      against,
      channels,
      zerocopy,
      GBps: spread(group.map((p) => Number(p.GBps))),
      receiverCpuSecondsPerGB: spread(group.map((p) => Number(p.receiverCpuSecondsPerGB))),
      ...(Object.keys(wins).length > 0 && { betterVersions: wins }),
    };
  });
}

/**
 * Encrypted against plain, ours, in the same round: each encrypted run over the plain run of
 * the same round, runtime, channels, zero-copy setting and pages; the median per case.
 */
export function encryptionSummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "multifd" && isRun(r) && defaultVariant(r));
  const same = (a: BenchRecord, b: BenchRecord) =>
    a.rep === b.rep && a.runtime === b.runtime && a.channels === b.channels && a.hugePages === b.hugePages &&
    zerocopyMode(a) === zerocopyMode(b);
  const ratios = runs.filter((r) => r.encrypt !== undefined).flatMap((e) => {
    const plain = runs.find((p) => p.encrypt === undefined && same(p, e));
    return plain ? [{ e, ratio: Number(e.GBps) / Number(plain.GBps) }] : [];
  });
  return [...groupBy(ratios, ({ e }) => multifdKey(e)).values()].map((group) => {
    const { e } = group[0];
    return {
      bench: "encryption-ratio",
      summary: true,
      ...caseFields(e),
      encrypt: e.encrypt,
      GBps: spread(group.map(({ ratio }) => ratio)),
    };
  });
}

/**
 * `--zero-pages on,off`: each run with the sender's zero-page detection (the default) over the
 * run without it of the same round and case (same data); the median per case.
 */
export function zeroPagesSummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "multifd" && isRun(r));
  const ratios = runs.filter((r) => r.zeroPages === false).flatMap((off) => {
    const on = runs.find((r) =>
      r.zeroPages !== false && r.rep === off.rep &&
      multifdKey(r) === multifdKey(off).replace("/no-zero-pages/", "/zero-pages/")
    );
    // Time and CPU seconds, not GB/s: with detection on, zero pages are not counted as bytes sent.
    const ratio = (field: string) => Number(on?.[field]) / Number(off[field]);
    return on
      ? [{ off, speed: 1 / ratio("seconds"), sender: ratio("senderCpuSeconds"), receiver: ratio("receiverCpuSeconds") }]
      : [];
  });
  return [...groupBy(ratios, ({ off }) => multifdKey(off)).values()].map((group) => {
    const { off } = group[0];
    return {
      bench: "zero-pages-ratio",
      summary: true,
      ...caseFields(off),
      zeroShare: off.zeroShare ?? 0,
      speed: spread(group.map((g) => g.speed)),
      senderCpuSeconds: spread(group.map((g) => g.sender)),
      receiverCpuSeconds: spread(group.map((g) => g.receiver)),
    };
  });
}

export function zeroPagesTable(summaries: BenchRecord[]): string {
  const rows = summaries.filter((s) => s.bench === "zero-pages-ratio").map((s) => [
    String(s.runtime),
    `${s.zeroShare}%`,
    String(s.channels),
    zerocopyMode(s),
    s.hugePages ? "2 MiB" : "4 KiB",
    formatSpread(s.speed as Spread, 2),
    formatSpread(s.senderCpuSeconds as Spread, 2),
    formatSpread(s.receiverCpuSeconds as Spread, 2),
    String((s.speed as Spread | undefined)?.n ?? 0),
  ]);
  return rows.length === 0 ? "" : markdownTable(
    [
      "runtime",
      "zero pages in the data",
      "channels",
      "zero-copy",
      "pages",
      "speed on/off",
      "sender CPU on/off",
      "receiver CPU on/off",
      "rounds",
    ],
    rows,
  );
}

export function encryptionTable(summaries: BenchRecord[]): string {
  const rows = summaries.filter((s) => s.bench === "encryption-ratio").map((s) => [
    String(s.runtime),
    String(s.encrypt),
    String(s.channels),
    zerocopyMode(s),
    s.hugePages ? "2 MiB" : "4 KiB",
    formatSpread(s.GBps as Spread, 2),
    String((s.GBps as Spread | undefined)?.n ?? 0),
  ]);
  return rows.length === 0
    ? ""
    : markdownTable(["runtime", "cipher", "channels", "zero-copy", "pages", "GB/s encrypted/plain", "rounds"], rows);
}

/** The interleaved comparison: per-round ours/QEMU, median (min–max) over the rounds. */
export function pairTable(summaries: BenchRecord[]): string {
  const pairs = summaries.filter((s) => s.bench === "qemu-pair" && s.summary);
  const better = (s: BenchRecord) =>
    s.betterVersions
      ? Object.entries(s.betterVersions as Record<string, number>).map(([v, n]) => `${v} ×${n}`).join(", ")
      : "";
  const rows = pairs.map((s) => [
    `${s.runtime}${s.ours ? ` (${s.ours})` : ""}`,
    s.against === "better" ? `**${s.config}**` : String(s.config),
    s.against === "better" ? `**${formatSpread(s.GBps as Spread, 2)}**` : formatSpread(s.GBps as Spread, 2),
    formatSpread(s.receiverCpuSecondsPerGB as Spread, 2),
    String((s.GBps as Spread | undefined)?.n ?? 0),
    ...(pairs.some((p) => p.betterVersions) ? [better(s)] : []),
  ]);
  return rows.length === 0 ? "" : markdownTable(
    [
      "runtime",
      "against QEMU",
      "GB/s ours/QEMU",
      "receiver CPU/GB ours/QEMU",
      "rounds",
      ...(pairs.some((p) => p.betterVersions) ? ["better version (rounds)"] : []),
    ],
    rows,
  );
}

/**
 * Ours over the native reference (runtime "native", zig/bench/ref_multifd.zig) of the same round,
 * channels, pages and send buffer, plain only: GB/s and each side's CPU per GB (the ratio
 * inside the round, then the median), and each side's user-space CPU per GB, ours and the
 * reference's (CPU − its kernel part: what is not the kernel's work for the same bytes).
 */
export function nativeReferenceSummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "multifd" && isRun(r) && !r.zerocopy && defaultVariant(r));
  const references = runs.filter((r) => r.runtime === "native");
  const pairs = runs.filter((r) => r.runtime !== "native").flatMap((ours) => {
    const reference = references.find((f) =>
      f.rep === ours.rep && f.channels === ours.channels && f.hugePages === ours.hugePages &&
      f.sendBufferBytes === ours.sendBufferBytes && f.encrypt === ours.encrypt
    );
    return reference ? [{ ours, reference }] : [];
  });
  const ratio = (key: string) => (p: { ours: BenchRecord; reference: BenchRecord }) =>
    num(p.ours, key) / num(p.reference, key);
  const user = (side: string) => (r: BenchRecord) =>
    num(r, `${side}CpuSecondsPerGB`) - num(r, `${side}SystemCpuSecondsPerGB`);
  return [...groupBy(pairs, ({ ours }) => multifdKey(ours)).values()].map((group) => ({
    bench: "reference-ratio",
    summary: true,
    ...caseFields(group[0].ours),
    sendBufferBytes: group[0].ours.sendBufferBytes,
    GBps: spread(group.map(ratio("GBps"))),
    senderCpuSecondsPerGB: spread(group.map(ratio("senderCpuSecondsPerGB"))),
    receiverCpuSecondsPerGB: spread(group.map(ratio("receiverCpuSecondsPerGB"))),
    senderUserCpuSecondsPerGB: spread(group.map(({ ours }) => user("sender")(ours))),
    receiverUserCpuSecondsPerGB: spread(group.map(({ ours }) => user("receiver")(ours))),
    referenceUserCpuSecondsPerGB: spread(
      group.map(({ reference }) => user("sender")(reference) + user("receiver")(reference)),
    ),
  }));
}

export function nativeReferenceTable(summaries: BenchRecord[]): string {
  const rows = summaries.filter((s) => s.bench === "reference-ratio" && s.summary).map((s) => [
    String(s.runtime),
    String(s.channels),
    s.hugePages ? "2 MiB" : "4 KiB",
    s.sendBufferBytes === -1 ? "auto" : s.sendBufferBytes ? `${Number(s.sendBufferBytes) / 1024} KiB` : "default",
    formatSpread(s.GBps as Spread, 2),
    formatSpread(s.senderCpuSecondsPerGB as Spread, 2),
    formatSpread(s.receiverCpuSecondsPerGB as Spread, 2),
    `${formatSpread(s.senderUserCpuSecondsPerGB as Spread, 3)} / ${
      formatSpread(s.receiverUserCpuSecondsPerGB as Spread, 3)
    }`,
    formatSpread(s.referenceUserCpuSecondsPerGB as Spread, 3),
    String((s.GBps as Spread | undefined)?.n ?? 0),
  ]);
  return markdownTable(
    [
      "runtime",
      "channels",
      "pages",
      "send buffer",
      "GB/s ours/native",
      "sender CPU/GB ours/native",
      "receiver CPU/GB ours/native",
      "ours, user CPU s/GB (sender / receiver)",
      "native, user CPU s/GB (both)",
      "rounds",
    ],
    rows,
  );
}

/** QEMU's rows, and ours/QEMU for the matching configurations (huge pages, same channels and zero-copy). */
export function qemuTable(summaries: BenchRecord[]): string {
  const qemu = summaries.filter((s) => s.bench === "qemu" && s.summary);
  if (qemu.length === 0) return "";
  const ratios = qemuRatios(summaries);
  const cell = (value: unknown) => (value === undefined ? "–" : Number(value).toFixed(2));
  const rows = qemu.map((q) => {
    const cells = [
      String(q.config),
      formatSpread(q.GBps as Spread, 2),
      formatSpread(q.srcCpuSecondsPerGB as Spread, 2),
      formatSpread(q.dstCpuSecondsPerGB as Spread, 2),
      q.verified ? "yes" : "NO",
    ];
    for (const runtime of RUNTIMES) {
      const r = ratios.find((r) => r.config === q.config && r.runtime === runtime);
      cells.push(cell(r?.GBps), cell(r?.senderCpuSecondsPerGB));
    }
    return cells;
  });
  return markdownTable(
    [
      "QEMU config",
      "GB/s",
      "src CPU s/GB",
      "dst CPU s/GB",
      "verified",
      ...RUNTIMES.flatMap((r) => [`${r}/QEMU GB/s`, `${r}/QEMU sender CPU`]),
    ],
    rows,
  );
}

// --- memory ---

/** Least-squares slope of y over x; undefined with fewer than two distinct x. */
function slope(points: [number, number][]): number | undefined {
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return n >= 2 && sxx > 0 ? points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0) / sxx : undefined;
}

/**
 * Per runtime and side: the module's own memory (peak RSS − region) with the smallest and
 * the largest region of the memory part, its growth between them, and the fixed cost per
 * channel: the slope of peak RSS over the channel counts of the multifd part (plain, 2 MiB).
 */
export function memorySummaries(records: BenchRecord[]): BenchRecord[] {
  const runs = records.filter((r) => r.bench === "memory" && isRun(r));
  const multifd = records.filter((r) =>
    r.bench === "multifd" && isRun(r) && r.hugePages && !r.zerocopy && defaultVariant(r)
  );
  const runtimes = [...new Set([...runs, ...multifd].map((r) => String(r.runtime)))];
  return runtimes.flatMap((runtime) =>
    (["sender", "receiver"] as const).map((side) => {
      const mine = runs.filter((r) => r.runtime === runtime);
      const sizes = [...new Set(mine.map((r) => num(r, "regionMiB")))].sort((a, b) => a - b);
      const own = (size: number | undefined) =>
        size === undefined
          ? undefined
          : spread(values(mine.filter((r) => num(r, "regionMiB") === size), `${side}OwnMiB`));
      const small = own(sizes[0]), large = sizes.length > 1 ? own(sizes[sizes.length - 1]) : undefined;
      const byChannels = [...groupBy(multifd.filter((r) => r.runtime === runtime), (r) => String(r.channels)).values()]
        .map((rs) => [num(rs[0], "channels"), spread(values(rs, `${side}PeakRssMiB`))!.median] as [number, number]);
      return {
        bench: "memory",
        summary: true,
        runtime,
        side,
        smallRegionMiB: sizes[0],
        largeRegionMiB: sizes.length > 1 ? sizes[sizes.length - 1] : undefined,
        ownMiBSmall: small,
        ownMiBLarge: large,
        growthMiB: small && large ? large.median - small.median : undefined,
        perChannelMiB: slope(byChannels),
      };
    })
  ).filter((s) => s.smallRegionMiB !== undefined || s.perChannelMiB !== undefined);
}

export function memoryTable(summaries: BenchRecord[]): string {
  const mib = (v: unknown) => (v === undefined ? "–" : Number(v).toFixed(0));
  const rows = summaries.filter((s) => s.bench === "memory" && s.summary).map((s) => [
    String(s.runtime),
    String(s.side),
    s.smallRegionMiB === undefined ? "–" : `${formatSpread(s.ownMiBSmall as Spread, 0)} (${s.smallRegionMiB} MiB)`,
    s.largeRegionMiB === undefined ? "–" : `${formatSpread(s.ownMiBLarge as Spread, 0)} (${s.largeRegionMiB} MiB)`,
    s.growthMiB === undefined ? "–" : `${Number(s.growthMiB) >= 0 ? "+" : ""}${mib(s.growthMiB)}`,
    s.perChannelMiB === undefined ? "–" : Number(s.perChannelMiB).toFixed(1),
  ]);
  return markdownTable(
    ["runtime", "side", "own MiB, small region", "own MiB, large region", "growth MiB", "MiB per channel"],
    rows,
  );
}

/** Every summary the records allow. */
export function summaries(records: BenchRecord[]): BenchRecord[] {
  return [
    ...streamSummaries(records),
    ...callSummaries(records),
    ...withQemuRatios([...multifdSummaries(records), ...qemuSummaries(records), ...pairSummaries(records)]),
    ...memorySummaries(records),
  ];
}

/** Multifd and QEMU summaries, followed by the ours/QEMU ratio records they allow. */
export function withQemuRatios(sums: BenchRecord[]): BenchRecord[] {
  return [...sums, ...qemuRatios(sums)];
}

/** The Markdown report: environment, then one section per benchmark present. */
export function markdownReport(title: string, environment: Record<string, string>, sums: BenchRecord[]): string {
  const parts = [`# ${title}`, "", ...Object.entries(environment).map(([k, v]) => `- ${k}: ${v}`), ""];
  parts.push(
    "Medians with (min–max) over the repetitions. GB = 10⁹ bytes. CPU = user + system time of the whole",
    "process (every thread). On loopback the kernel copies every zero-copy send (`zc copied` 100%):",
    "zero-copy cannot win here; see docs/REAL_NIC.md.",
    "",
  );
  const section = (heading: string, body: string, note = "") => {
    if (body.split("\n").length <= 2) return; // a header without rows
    parts.push(`## ${heading}`, "", ...(note ? [note, ""] : []), body, "");
  };
  section(
    "Single stream (loopback, native sink)",
    streamTable(sums),
    "Sender throughput and sender CPU per GB; `native-*` is zc-ref-send (Zig, no JS). ÷ native: GB/s over the " +
      "native reference's in the same repetition (zero-copy cases over native-zerocopy), median (min–max).",
  );
  section(
    "Per-call overhead (tiny sends to the native sink)",
    callTable(sums),
    "ns per send call (wall clock, and CPU of the sending process). Over native: this call's median − the Zig " +
      "reference's (same payload, another process: the 1-byte path varies with TCP timing; the empty send is the " +
      "clean FFI cost). Over raw FFI: the module's own JS per call, paired with `ffi-1B` of the same run.",
  );
  section(
    "Multifd (loopback, sender and receiver in separate processes)",
    multifdTable(sums),
    "Transfer time only (set-up and checksums excluded); CPU measured over the round from /proc/PID/stat. " +
      "Send buffer: the sender's SO_SNDBUF (`sendBufferBytes`); default = the library's (256 KiB with the receiver on " +
      "this host, else the kernel's autotuning), auto = the kernel's autotuning (`-1`).",
  );
  section(
    "Ours against QEMU, interleaved round by round",
    pairTable(sums),
    "Each round runs ours, then at once each QEMU version (7.2 and 10.0, each migrating to itself; their order " +
      "alternates) with the same channels and zero-copy setting (2 MiB pages, default options); the ratio is taken " +
      "inside the round, then the median over the rounds: this VM drifts by ±50% within minutes, so only these " +
      "ratios compare. `better`: against the faster QEMU version of each round (max of their GB/s; receiver CPU " +
      "against that run), the last column says which version it was. > 1: ours faster (GB/s) or more CPU per GB. " +
      "QEMU's time includes its channel set-up; ours excludes set-up and Worker start-up.",
  );
  section(
    "Ours against the native reference, interleaved",
    nativeReferenceTable(sums),
    "The native reference (`native` in the tables above; zig/bench/ref_multifd.zig) moves the same bytes over the " +
      "same number of loopback connections with the same send buffer and pages and the channel Workers' system calls " +
      "(a packet's payload per call, one thread per channel on each side), and nothing else: no protocol, no JavaScript; its " +
      "receiver checks every byte after the clock stops. It runs right after our case in each round (after the " +
      "QEMU runs that follow ours). Ratios inside the round, then the median; user CPU = CPU − its kernel part " +
      "(10 ms ticks).",
  );
  section(
    "Encrypted channels against our own plain ones, interleaved",
    encryptionTable(sums),
    "Each encrypted run over the plain run of the same round, runtime, channels, zero-copy setting and pages " +
      "(the ratio inside the round, then the median over the rounds). Encrypted cases are also in the table " +
      "against QEMU above, paired with QEMU multifd + TLS (no zero-copy: QEMU refuses it with TLS).",
  );
  section(
    "Zero-page detection on against off, interleaved",
    zeroPagesTable(sums),
    "Each run with the sender's `zeroPages` (the default: all-zero pages go as offsets, the receiver makes them " +
      "zero) over the run without it of the same round, runtime, case and data (`--zero-share`: that percent of the " +
      "source's pages all zero, in runs of that many pages in every 100); the ratio inside the round, then the " +
      "median over the rounds, of the region's transfer time (speed = time off / time on) and of each side's CPU " +
      "seconds for it. > 1: faster, or more CPU, with detection on. (In the table above GB/s and CPU per GB count " +
      "the bytes sent as data: with detection on, zero pages are not among them.)",
  );
  section(
    "QEMU multifd (7.2, 10.0) on the same machine, and ours/QEMU",
    qemuTable(sums),
    "QEMU: guest RAM (random data) on a huge=always tmpfs, GB/s = RAM bytes / QEMU's total-time (which includes " +
      "its channel set-up; ours excludes set-up and Worker start-up). Ratios = our median / QEMU's median for the " +
      "same channels and zero-copy setting, 2 MiB pages: > 1 means ours is faster (GB/s) or uses more CPU per GB.",
  );
  section(
    "Memory: the module's own RSS, and what a channel costs",
    memoryTable(sums),
    "Own MiB = peak RSS (VmHWM) of the process − the region, for the same transfer (4 channels, plain, 2 MiB " +
      "pages) with a small and a large region: it must not grow with the region. MiB per channel = slope of peak " +
      "RSS over 1/2/4/8 channels in the multifd part (each channel Worker is a JS engine).",
  );
  return parts.join("\n");
}

/** Versions and machine facts for the report header. */
export function environment(extra: Record<string, string> = {}): Record<string, string> {
  const version = (argv: string[]) => {
    const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
    return r.status === 0 ? r.stdout.split("\n")[0].trim() : "unavailable";
  };
  return {
    date: new Date().toISOString(),
    machine: `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? "?"}), ${
      Math.round(os.totalmem() / 2 ** 30)
    } GiB RAM, Linux ${os.release()}`,
    runtimes: RUNTIMES.map((r) => {
      const v = version([runtimeBinary(r), "--version"]);
      return v.startsWith(r) ? v : `${r} ${v}`;
    }).join("; "),
    "load average at start": os.loadavg().map((v) => v.toFixed(2)).join(" "),
    ...extra,
  };
}

/** A run's results files: bench/results/<date>-<suite>.jsonl (appended live) and .md. */
export class ResultsFiles {
  readonly jsonlPath: string;
  readonly markdownPath: string;

  constructor(suite: string, directory = `${ROOT}bench/results`) {
    mkdirSync(directory, { recursive: true });
    const stamp = new Date().toISOString().replace(/:/g, "-").replace(/\..*/, "");
    this.jsonlPath = `${directory}/${stamp}-${suite}.jsonl`;
    this.markdownPath = `${directory}/${stamp}-${suite}.md`;
    writeFileSync(this.jsonlPath, "");
  }

  append(record: BenchRecord): void {
    appendFileSync(this.jsonlPath, JSON.stringify(record) + "\n");
  }

  writeMarkdown(text: string): void {
    writeFileSync(this.markdownPath, text.endsWith("\n") ? text : text + "\n");
  }
}
