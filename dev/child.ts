/**
 * Child processes for the tests and the benchmarks: run one to its end, or watch one
 * while it runs — its stdout as a queue of lines (JSON lines, for the bench programs) or
 * a pattern awaited in its output (a port it prints). Runtime-neutral (node:* APIs only).
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (asynchronously: the event loop stays free); SIGKILL after `timeoutMs`. */
export function run(argv: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The last line of `text` (a child's stdout) parsed as JSON. */
export function lastJson(text: string) {
  return JSON.parse(text.trim().split("\n").at(-1)!);
}

export interface ChildOptions {
  /** Set in (undefined: removed from) this process's environment for the child. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Names the child in errors (default: the start of its argv). */
  label?: string;
  /** "pipe": write to `child.process.stdin`. Default "ignore". */
  stdin?: "ignore" | "pipe";
}

type Stream = "stdout" | "stderr";

/**
 * A running child process. Its stdout lines are queued and taken in order with
 * {@link nextLine}; {@link waitFor} awaits a pattern in its output instead; `stdout` and
 * `stderr` hold all it wrote.
 */
export class LineChild {
  readonly process: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  #lines: string[] = [];
  #partial = "";
  #waiters: { resolve: (line: string) => void; reject: (error: Error) => void }[] = [];
  #text: Record<Stream, string> = { stdout: "", stderr: "" };
  #watchers = new Set<() => void>();
  #ended = false;
  readonly #label: string;

  constructor(argv: string[], options: ChildOptions = {}) {
    this.#label = options.label ?? argv.slice(0, 3).join(" ");
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries({ ...process.env, ...options.env })) {
      if (value !== undefined) env[key] = value;
    }
    this.process = spawn(argv[0], argv.slice(1), {
      stdio: [options.stdin ?? "ignore", "pipe", "pipe"],
      cwd: options.cwd,
      env,
    });
    this.process.stdout!.setEncoding("utf8");
    this.process.stdout!.on("data", (chunk: string) => {
      this.#append("stdout", chunk);
      const parts = (this.#partial + chunk).split("\n");
      this.#partial = parts.pop()!;
      for (const line of parts) this.#push(line);
    });
    this.process.stderr!.setEncoding("utf8");
    this.process.stderr!.on("data", (chunk: string) => this.#append("stderr", chunk));
    this.exited = new Promise((resolve) => {
      this.process.on("error", (error) => {
        this.#text.stderr += `\nspawn failed: ${error.message}`;
        this.#end();
        resolve({ code: -1, signal: null });
      });
      this.process.on("close", (code, signal) => {
        if (this.#partial) this.#push(this.#partial), (this.#partial = "");
        this.#end();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  /** All the child wrote on stdout so far. */
  get stdout(): string {
    return this.#text.stdout;
  }

  /** All the child wrote on stderr so far. */
  get stderr(): string {
    return this.#text.stderr;
  }

  /** The next stdout line; rejects when the child exits first or after `timeoutMs`. */
  nextLine(timeoutMs = 120_000): Promise<string> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#ended) return Promise.reject(this.#error("exited without output"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(this.#error(`no output for ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (line: string) => (clearTimeout(timer), resolve(line));
      this.#waiters.push({ resolve: done, reject: (e) => (clearTimeout(timer), reject(e)) });
    });
  }

  /** The next stdout line that parses as a JSON object (other lines are skipped). */
  async nextJson<T = Record<string, unknown>>(timeoutMs = 120_000): Promise<T> {
    for (;;) {
      const line = await this.nextLine(timeoutMs);
      if (!line.startsWith("{")) continue;
      const value = JSON.parse(line);
      if (typeof value.error === "string") throw this.#error(value.error);
      return value as T;
    }
  }

  /**
   * The first match of `pattern` in `stream` from character `from` on (see `stdout`,
   * `stderr`), looking at whole lines only; rejects when the child exits without one.
   */
  waitFor(pattern: RegExp, stream: Stream = "stdout", from = 0): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        // Whole lines only while it runs (a line may arrive in pieces); all of it once it exited.
        const text = this.#text[stream];
        const match = pattern.exec(text.slice(from, this.#ended ? text.length : text.lastIndexOf("\n") + 1));
        if (match) {
          this.#watchers.delete(check);
          resolve(match);
        } else if (this.#ended) {
          this.#watchers.delete(check);
          reject(this.#error(`exited before printing ${pattern} on ${stream}`));
        }
      };
      this.#watchers.add(check);
      check();
    });
  }

  /** Kills the child (SIGKILL) unless it has exited; waits for it. */
  async kill(): Promise<void> {
    if (!this.#ended) this.process.kill("SIGKILL");
    await this.exited;
  }

  #append(stream: Stream, chunk: string): void {
    this.#text[stream] += chunk;
    for (const check of [...this.#watchers]) check();
  }

  #push(line: string): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(line);
    else this.#lines.push(line);
  }

  #end(): void {
    this.#ended = true;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#error("exited without output"));
    for (const check of [...this.#watchers]) check();
  }

  #error(what: string): Error {
    const stderr = this.stderr.trim();
    const tail = stderr ? `: ${stderr.split("\n").slice(-6).join(" | ")}` : "";
    return new Error(`${this.#label} ${what}${tail}`);
  }
}

/** Runs argv to completion; resolves with its last stdout JSON object. */
export async function runJson<T = Record<string, unknown>>(
  argv: string[],
  options: { env?: Record<string, string>; label?: string; timeoutMs?: number } = {},
): Promise<T> {
  const child = new LineChild(argv, options);
  let last: T | undefined;
  try {
    for (;;) {
      let line: string;
      try {
        line = await child.nextLine(options.timeoutMs ?? 600_000);
      } catch (error) {
        if (last !== undefined) break;
        throw error;
      }
      if (!line.startsWith("{")) continue;
      const value = JSON.parse(line);
      if (typeof value.error === "string") throw new Error(`${options.label ?? argv[0]}: ${value.error}`);
      last = value;
    }
  } finally {
    await child.kill();
  }
  const { code } = await child.exited;
  if (code !== 0) {
    throw new Error(`${options.label ?? argv[0]} exited with ${code}: ${child.stderr.trim().slice(-600)}`);
  }
  return last!;
}
