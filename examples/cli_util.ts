/**
 * Small helpers shared by the examples: byte, rate and time formatting, a progress bar on
 * stderr, a stats table and HOST:PORT parsing. (Synchronous output: util/output.ts.)
 * @module
 */
import process from "node:process";
import { writeAll } from "../util/output.ts";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 → "1.50 KiB". */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) value /= 1024, unit++;
  return unit === 0 ? `${value} B` : `${value.toFixed(2)} ${UNITS[unit]}`;
}

/** Bytes per second as GB/s (10^9) when large, else MB/s. */
export function formatRate(bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "-";
  return bytesPerSecond >= 1e9
    ? `${(bytesPerSecond / 1e9).toFixed(2)} GB/s`
    : `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

/** Seconds as "4.2 ms", "3.42 s", "1m05s". */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "-";
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m${String(Math.round(seconds - minutes * 60)).padStart(2, "0")}s`;
}

/**
 * Throughput over a sliding window: the bytes counted during the last `windowSeconds`
 * divided by the time they took. It follows changes within the window and neither lags
 * nor decays the way a smoothed instantaneous rate does.
 */
export class SlidingRate {
  readonly #windowSeconds: number;
  #samples: { seconds: number; bytes: number }[] = [];

  constructor(windowSeconds = 3) {
    this.#windowSeconds = windowSeconds;
  }

  /**
   * Records `bytes` (a running total) at time `seconds`; returns the rate over the window
   * in bytes per second (NaN until the samples span some time).
   */
  add(seconds: number, bytes: number): number {
    const samples = this.#samples;
    samples.push({ seconds, bytes });
    // The base is the newest sample at or before the window's start (the oldest one, early on).
    while (samples.length > 2 && samples[1].seconds <= seconds - this.#windowSeconds) samples.shift();
    const base = samples[0];
    return seconds > base.seconds ? (bytes - base.bytes) / (seconds - base.seconds) : NaN;
  }
}

/**
 * One progress line: label, bar, percentage, bytes, rate, then the ETA — or, once `bytes`
 * reached `total`, the time the transfer took (`seconds`). Cut to `columns - 1`.
 */
export function progressLine(
  label: string,
  bytes: number,
  total: number,
  bytesPerSecond: number,
  seconds: number,
  columns = 80,
): string {
  const fraction = total > 0 ? Math.min(1, bytes / total) : 1;
  const time = bytes >= total ? formatSeconds(seconds) : `ETA ${formatSeconds((total - bytes) / bytesPerSecond)}`;
  const text = ` ${(fraction * 100).toFixed(1).padStart(5)}%  ${formatBytes(bytes)} / ${formatBytes(total)}  ` +
    `${formatRate(bytesPerSecond)}  ${time}`;
  // The text part is ~60 columns at most; a fixed bar width keeps the line from jumping.
  const width = Math.max(10, Math.min(40, columns - 64 - label.length));
  const filled = Math.round(fraction * width);
  return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}]${text}`.slice(0, columns - 1);
}

/** How far back the live rate of {@link ProgressBar} looks. */
const RATE_WINDOW_SECONDS = 3;

/**
 * A one-line progress bar on stderr, redrawn ~5 times a second, by default only when
 * stderr is a terminal. `done()` reads the progress counter. While the transfer runs the
 * rate is the last few seconds' ({@link SlidingRate}) and the ETA follows from it; at 100%
 * the line shows the average over the whole transfer, and {@link finish} ends it with the
 * transfer's own numbers.
 */
export class ProgressBar {
  readonly #label: string;
  readonly #total: number;
  readonly #done: () => number;
  readonly #enabled: boolean;
  readonly #rate = new SlidingRate(RATE_WINDOW_SECONDS);
  #timer: ReturnType<typeof setInterval> | undefined;
  #started = NaN;
  /** Seconds from start() until `done()` first reached the total. */
  #completedAfter = NaN;
  #finished = false;

  constructor(label: string, total: number, done: () => number, enabled = process.stderr.isTTY === true) {
    this.#label = label;
    this.#total = total;
    this.#done = done;
    this.#enabled = enabled;
  }

  /** Draws the bar and keeps redrawing it; after a stop() it carries on where it was. */
  start(): void {
    if (!this.#enabled || this.#timer || this.#finished) return;
    if (Number.isNaN(this.#started)) this.#started = performance.now();
    this.#timer = setInterval(() => this.#draw(), 200);
    this.#draw();
  }

  /** Removes the bar (call before printing anything else). */
  stop(): void {
    if (!this.#timer) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    writeAll(2, "\r\x1b[2K");
  }

  /**
   * Ends the bar at 100% with the transfer's result, the same numbers it reports: its
   * `seconds`, and `bytes / seconds` as the rate. The line stays on screen.
   */
  finish(result: { bytes: number; seconds: number }): void {
    if (Number.isNaN(this.#started) || this.#finished) return;
    this.#finished = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    const rate = result.seconds > 0 ? result.bytes / result.seconds : NaN;
    writeAll(2, `\r\x1b[2K${this.#line(this.#total, rate, result.seconds)}\n`);
  }

  #draw(): void {
    const seconds = (performance.now() - this.#started) / 1000;
    const bytes = Math.min(this.#total, this.#done());
    let rate = this.#rate.add(seconds, bytes);
    if (bytes >= this.#total) {
      // Complete (the checksum may still run): the average rate, the time the data took.
      if (Number.isNaN(this.#completedAfter)) this.#completedAfter = seconds;
      rate = bytes / this.#completedAfter;
    }
    writeAll(2, `\r\x1b[2K${this.#line(bytes, rate, this.#completedAfter)}`);
  }

  #line(bytes: number, rate: number, seconds: number): string {
    return progressLine(this.#label, bytes, this.#total, rate, seconds, process.stderr.columns || 80);
  }
}

/** Left column of labels, then one right-aligned column per entry of `columns`. */
export function table(headers: string[], rows: (string | number | boolean)[][]): string {
  const cells = [headers, ...rows.map((row) => row.map(String))];
  const widths = headers.map((_, column) => Math.max(...cells.map((row) => (row[column] ?? "").length)));
  const line = (row: string[]) =>
    row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]))).join("  ")
      .trimEnd();
  return [line(cells[0]), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

/** Stats (the TransferStats shape) as table rows, one column per side. */
export function statsRows(sides: object[]): (string | number | boolean)[][] {
  const field = (name: string, format: (value: unknown) => string = String) => [
    name,
    ...sides.map((side) => {
      const value = (side as Record<string, unknown>)[name];
      return value === undefined ? "-" : format(value);
    }),
  ];
  const seconds = (value: unknown) => `${(value as number).toFixed(3)} s`;
  return [
    field("bytes", (v) => `${v} (${formatBytes(v as number)})`),
    field("seconds", seconds),
    field("GBps", (v) => `${v} GB/s`),
    field("channels"),
    field("zerocopy"),
    field("encryption"),
    field("packets"),
    field("pagesNormal"),
    field("pagesZero"),
    field("rounds"),
    field("zerocopySends"),
    field("zerocopyCopied"),
    field("zerocopyFlushesAllCopied"),
    field("zerocopyFallbacks"),
    field("perChannelBytes", (v) => (v as number[]).map((b) => formatBytes(b)).join(", ")),
    field("setupSeconds", seconds),
    field("checksumSeconds", seconds),
    field("checksumAlgorithm"),
    field("checksum"),
    field("verified"),
  ];
}

/** A parsed HOST:PORT. `hostname` has no brackets; `display` does for IPv6. */
export interface HostPort {
  hostname: string;
  port: number;
  display: string;
}

/** Parses "HOST:PORT", "[IPV6]:PORT" (port 0..65535). Throws a plain Error describing the problem. */
export function parseHostPort(text: string, flag: string): HostPort {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!match) {
    throw new Error(`${flag} must be HOST:PORT or [IPV6]:PORT, got "${text}"`);
  }
  const port = Number(match[2]);
  if (!Number.isInteger(port) || port > 65535) throw new Error(`${flag}: port must be 0..65535, got ${match[2]}`);
  const hostname = match[1];
  return { hostname, port, display: formatHostPort(hostname, port) };
}

export function formatHostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** "3", "64M", "1.5GiB", "2G" → bytes (K/M/G/T are binary). Throws on anything else. */
export function parseSize(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!match) throw new Error(`${flag} must be a byte count like 1073741824, 512M or 64G, got "${text}"`);
  const scale = 1024 ** " KMGT".indexOf(match[2].toUpperCase() || " ");
  const bytes = Math.round(Number(match[1]) * scale);
  if (!Number.isSafeInteger(bytes)) throw new Error(`${flag} is too large: ${text}`);
  return bytes;
}

/** A positive integer flag value in [min, max]. */
export function parseInteger(text: string, flag: string, min: number, max: number): number {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new Error(`${flag} must be an integer in ${min}..${max}, got "${text}"`);
  }
  return value;
}

/** An error's message on one line. */
export function oneLine(error: unknown): string {
  const e = error as { name?: string; message?: string };
  const text = e && typeof e.message === "string"
    ? `${e.name && e.name !== "Error" ? e.name + ": " : ""}${e.message}`
    : String(error);
  return text.replace(/\s*\n\s*/g, " ").trim();
}
