/**
 * The multifd chart: throughput by number of channels, ours (Deno, Bun) and QEMU, plain
 * and zero-copy, medians with min–max bars, as a self-contained SVG.
 *
 *   deno run -A bench/chart.ts [RESULTS.jsonl ...] [--out bench/results/multifd.svg]
 *
 * Without files it reads the newest bench/results/*.jsonl that has multifd records.
 * Only 2 MiB-page runs are drawn (QEMU's guest RAM is on 2 MiB pages too).
 * @module
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { ROOT } from "../dev/root.ts";
import { err as note } from "../util/output.ts";
import { type BenchRecord, groupBy, type Spread, spread } from "./lib/report.ts";

export const DEFAULT_CHART_PATH = `${ROOT}bench/results/multifd.svg`;

interface Series {
  label: string;
  color: string;
  dashed: boolean;
  points: Map<number, Spread>;
}

const COLORS: Record<string, string> = {
  deno: "#1f6fb4",
  bun: "#d2691e",
  "qemu 7.2": "#2a9d3a",
  "qemu 10.0": "#7b3fa0",
};

function collectSeries(records: BenchRecord[]): Series[] {
  const runs = records.filter((r) =>
    r.summary !== true && r.error === undefined &&
    ((r.bench === "multifd" && r.hugePages === true && !r.sendBufferBytes) || r.bench === "qemu")
  );
  // QEMU records name their version (qemuVersion; older results files: 7.2 only).
  const who = (r: BenchRecord) => (r.bench === "qemu" ? `qemu ${r.qemuVersion ?? "7.2"}` : String(r.runtime));
  const key = (r: BenchRecord) => `${who(r)}/${r.zerocopy ? "zc" : "plain"}`;
  const series: Series[] = [];
  for (const [k, rs] of groupBy(runs, key)) {
    const [who, mode] = k.split("/");
    const points = new Map<number, Spread>();
    for (const [channels, group] of groupBy(rs, (r) => String(r.channels))) {
      const s = spread(group.map((r) => Number(r.GBps)));
      if (s) points.set(Number(channels), s);
    }
    const name = who.startsWith("qemu") ? who.replace("qemu", "QEMU") : `ours, ${who}`;
    series.push({
      label: `${name}${mode === "zc" ? " + zero-copy" : ""}`,
      color: COLORS[who] ?? "#555",
      dashed: mode === "zc",
      points,
    });
  }
  const order = (s: Series) => ["ours, deno", "ours, bun", "QEMU"].findIndex((p) => s.label.startsWith(p));
  return series.sort((a, b) => order(a) - order(b) || Number(a.dashed) - Number(b.dashed));
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** The SVG text, or undefined when there is nothing to draw. */
export function chartSvg(records: BenchRecord[], subtitle = ""): string | undefined {
  const series = collectSeries(records);
  const channels = [...new Set(series.flatMap((s) => [...s.points.keys()]))].sort((a, b) => a - b);
  if (channels.length === 0) return undefined;
  const width = 760, height = 460;
  const plot = { left: 70, right: 250, top: 60, bottom: 60 };
  const plotWidth = width - plot.left - plot.right;
  const plotHeight = height - plot.top - plot.bottom;
  const maxValue = Math.max(...series.flatMap((s) => [...s.points.values()].map((p) => p.max)), 0.1);
  const step = [0.1, 0.2, 0.25, 0.5, 1, 2, 5].find((t) => maxValue / t <= 8) ?? 10;
  const top = Math.ceil((maxValue * 1.05) / step) * step;
  const x = (c: number) =>
    plot.left + (channels.length === 1 ? plotWidth / 2 : (channels.indexOf(c) / (channels.length - 1)) * plotWidth);
  const y = (v: number) => plot.top + plotHeight - (v / top) * plotHeight;
  const f = (v: number) => v.toFixed(1);

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    `font-family="Helvetica, Arial, sans-serif" font-size="13">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${plot.left}" y="26" font-size="16" font-weight="bold">Multifd over loopback: throughput by channels</text>`,
    `<text x="${plot.left}" y="45" fill="#555">${escape(subtitle)}</text>`,
  ];
  for (let v = 0; v <= top + 1e-9; v += step) {
    parts.push(
      `<line x1="${plot.left}" x2="${plot.left + plotWidth}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="#e5e5e5"/>`,
      `<text x="${plot.left - 8}" y="${f(y(v) + 4)}" text-anchor="end">${+v.toFixed(2)}</text>`,
    );
  }
  for (const c of channels) {
    parts.push(`<text x="${f(x(c))}" y="${plot.top + plotHeight + 20}" text-anchor="middle">${c}</text>`);
  }
  parts.push(
    `<line x1="${plot.left}" x2="${plot.left + plotWidth}" y1="${plot.top + plotHeight}" y2="${
      plot.top + plotHeight
    }" stroke="#333"/>`,
    `<text x="${plot.left + plotWidth / 2}" y="${height - 15}" text-anchor="middle">channels</text>`,
    `<text transform="translate(20 ${
      plot.top + plotHeight / 2
    }) rotate(-90)" text-anchor="middle">GB/s (10⁹ B/s), median, min–max bars</text>`,
  );
  series.forEach((s, i) => {
    const points = [...s.points.entries()].sort((a, b) => a[0] - b[0]);
    const dash = s.dashed ? ` stroke-dasharray="6 4"` : "";
    if (points.length > 1) {
      const path = points.map(([c, p]) => `${f(x(c))},${f(y(p.median))}`).join(" ");
      parts.push(`<polyline points="${path}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
    }
    for (const [c, p] of points) {
      const offset = (i - (series.length - 1) / 2) * 3; // keep overlapping bars apart
      parts.push(
        `<line x1="${f(x(c) + offset)}" x2="${f(x(c) + offset)}" y1="${f(y(p.min))}" y2="${
          f(y(p.max))
        }" stroke="${s.color}" stroke-width="1.5" opacity="0.6"/>`,
        s.dashed
          ? `<circle cx="${f(x(c))}" cy="${f(y(p.median))}" r="4" fill="#fff" stroke="${s.color}" stroke-width="2"/>`
          : `<circle cx="${f(x(c))}" cy="${f(y(p.median))}" r="4" fill="${s.color}"/>`,
      );
    }
    const ly = plot.top + 10 + i * 22;
    const lx = width - plot.right + 20;
    parts.push(
      `<line x1="${lx}" x2="${lx + 28}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${lx + 36}" y="${ly + 4}">${escape(s.label)}</text>`,
    );
  });
  const legendEnd = plot.top + 10 + series.length * 22 + 10;
  const footnotes = [
    "Loopback: the kernel copies every",
    "zero-copy send, so zero-copy cannot",
    "win here (docs/REAL_NIC.md).",
  ];
  footnotes.forEach((line, i) =>
    parts.push(
      `<text x="${width - plot.right + 20}" y="${legendEnd + 16 + i * 16}" fill="#777" font-size="11">${line}</text>`,
    )
  );
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** Writes the chart of `records` (if there is anything to draw); returns the path written. */
export function writeChart(records: BenchRecord[], path = DEFAULT_CHART_PATH): string | undefined {
  const sizes = new Set(records.filter((r) => r.bench === "multifd" && r.bytes).map((r) => Number(r.bytes)));
  const runtimes = new Set(records.filter((r) => r.bench === "multifd").map((r) => r.runtime));
  const subtitle = `${[...sizes].map((b) => `${b / 2 ** 20} MiB`).join(", ")} of random data, 2 MiB pages, ` +
    `${[...runtimes].join(" and ")}${records.some((r) => r.bench === "qemu") ? " vs QEMU" : ""}; ` +
    new Date().toISOString().slice(0, 10);
  const svg = chartSvg(records, subtitle);
  if (!svg) return undefined;
  writeFileSync(path, svg);
  return path;
}

function newestResults(): string | undefined {
  const directory = `${ROOT}bench/results`;
  if (!existsSync(directory)) return undefined;
  return readdirSync(directory)
    .filter((name) => name.endsWith(".jsonl"))
    .map((name) => `${directory}/${name}`)
    .filter((path) => readFileSync(path, "utf8").includes(`"bench":"multifd"`))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { out: { type: "string", default: DEFAULT_CHART_PATH } },
  });
  const files = positionals.length > 0 ? positionals : [newestResults()].filter((p): p is string => !!p);
  if (files.length === 0) {
    note("chart.ts: no results with multifd records in bench/results/");
    process.exit(1);
  }
  const records = files.flatMap((file) =>
    readFileSync(file, "utf8").split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line))
  );
  const written = writeChart(records, values.out);
  note(written ? `chart.ts: wrote ${written} from ${files.join(", ")}` : "chart.ts: nothing to draw");
  process.exit(written ? 0 : 1);
}
