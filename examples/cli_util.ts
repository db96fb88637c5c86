/**
 * Small helpers shared by the examples: byte and time formatting, a progress bar on
 * stderr, a stats table, HOST:PORT parsing and synchronous output.
 * @module
 */
import { writeSync } from "node:fs";
import process from "node:process";

/** Writes to stdout synchronously: nothing is lost when the process exits right after. */
export function out(text: string): void {
  writeAll(1, text.endsWith("\n") ? text : text + "\n");
}

/** Writes to stderr synchronously. */
export function err(text: string): void {
  writeAll(2, text.endsWith("\n") ? text : text + "\n");
}

function writeAll(fd: number, text: string): void {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  while (offset < bytes.length) {
    try {
      offset += writeSync(fd, bytes, offset, bytes.length - offset);
    } catch (error) {
      // A non-blocking pipe that is full: retry; anything else (EPIPE…) drops the output.
      if ((error as { code?: string }).code !== "EAGAIN") return;
    }
  }
}

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
 * A one-line progress bar on stderr (bytes, percentage, rate, ETA), redrawn ~5 times a
 * second, only when stderr is a terminal. `done()` reads the progress counter.
 */
export class ProgressBar {
  readonly #label: string;
  readonly #total: number;
  readonly #done: () => number;
  readonly #enabled: boolean;
  #timer: ReturnType<typeof setInterval> | undefined;
  #started = 0;
  #lastBytes = 0;
  #lastTime = 0;
  #rate = 0;

  constructor(label: string, total: number, done: () => number, enabled = process.stderr.isTTY === true) {
    this.#label = label;
    this.#total = total;
    this.#done = done;
    this.#enabled = enabled;
  }

  start(): void {
    if (!this.#enabled || this.#timer) return;
    this.#started = this.#lastTime = performance.now();
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

  #draw(): void {
    const now = performance.now();
    const bytes = Math.min(this.#total, this.#done());
    const interval = (now - this.#lastTime) / 1000;
    if (interval >= 0.15) {
      const instant = (bytes - this.#lastBytes) / interval;
      // Smoothed rate; the first sample sets it.
      this.#rate = this.#rate === 0 ? instant : 0.6 * this.#rate + 0.4 * instant;
      this.#lastBytes = bytes;
      this.#lastTime = now;
    }
    const fraction = this.#total > 0 ? bytes / this.#total : 1;
    const elapsed = (now - this.#started) / 1000;
    const eta = this.#rate > 0 ? (this.#total - bytes) / this.#rate : NaN;
    const columns = process.stderr.columns || 80;
    const text = ` ${(fraction * 100).toFixed(1).padStart(5)}%  ${formatBytes(bytes)} / ${formatBytes(this.#total)}  ` +
      `${formatRate(this.#rate)}  ${bytes >= this.#total ? `${formatSeconds(elapsed)}` : `ETA ${formatSeconds(eta)}`}`;
    // The text part is ~60 columns at most; a fixed bar width keeps the line from jumping.
    const width = Math.max(10, Math.min(40, columns - 64 - this.#label.length));
    const filled = Math.round(fraction * width);
    const line = `${this.#label} [${"#".repeat(filled)}${"-".repeat(width - filled)}]${text}`;
    writeAll(2, `\r\x1b[2K${line.slice(0, columns - 1)}`);
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
    field("packets"),
    field("pagesNormal"),
    field("pagesZero"),
    field("rounds"),
    field("zerocopySends"),
    field("zerocopyCopied"),
    field("zerocopySyncsAllCopied"),
    field("perChannelBytes", (v) => (v as number[]).map((b) => formatBytes(b)).join(", ")),
    field("setupSeconds", seconds),
    field("checksumSeconds", seconds),
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
