/**
 * A minimal QMP client (QEMU's JSON control protocol) over a unix socket, for the QEMU
 * benchmarks and the QEMU interop tests: one command at a time, events queued.
 * @module
 */
import net from "node:net";
import type { LineChild } from "./child.ts";

const MIGRATION_TIMEOUT_MS = 600_000;
const QMP_TIMEOUT_MS = 60_000;

/** A minimal QMP client over the QEMU's unix socket: one command at a time, events queued. */
export class Qmp {
  readonly events: Record<string, unknown>[] = [];
  #socket: net.Socket;
  #buffer = "";
  #pending: { resolve: (value: unknown) => void; reject: (error: Error) => void } | undefined;
  #eventWaiter: (() => void) | undefined;
  #closed = false;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      const lines = (this.#buffer + chunk).split("\n");
      this.#buffer = lines.pop()!;
      for (const line of lines) if (line.trim()) this.#message(JSON.parse(line));
    });
    const closed = () => {
      this.#closed = true;
      this.#pending?.reject(new Error("QMP connection closed"));
      this.#pending = undefined;
      this.#eventWaiter?.();
    };
    socket.on("close", closed);
    socket.on("error", closed);
  }

  /** Connects (retrying while QEMU starts) and leaves capabilities negotiation mode. */
  static async connect(path: string, child: LineChild): Promise<Qmp> {
    const started = performance.now();
    for (;;) {
      const socket = await new Promise<net.Socket | undefined>((resolve) => {
        const s = net.createConnection({ path });
        s.once("connect", () => resolve(s));
        s.once("error", () => (s.destroy(), resolve(undefined)));
      });
      if (socket) {
        const qmp = new Qmp(socket);
        await qmp.#greeting();
        await qmp.command("qmp_capabilities");
        return qmp;
      }
      const exited = await Promise.race([child.exited, new Promise((r) => setTimeout(() => r(undefined), 50))]);
      if (exited) throw new Error(`QEMU exited before its QMP socket came up: ${child.stderr.slice(-400)}`);
      if (performance.now() - started > QMP_TIMEOUT_MS) throw new Error(`QMP socket ${path} did not come up`);
    }
  }

  #greetingSeen: (() => void) | undefined;
  #greeting(): Promise<void> {
    return new Promise((resolve) => (this.#greetingSeen = resolve));
  }

  #message(message: Record<string, unknown>): void {
    if ("QMP" in message) return this.#greetingSeen?.();
    if ("event" in message) {
      this.events.push(message);
      this.#eventWaiter?.();
      return;
    }
    const pending = this.#pending;
    this.#pending = undefined;
    if (!pending) return;
    if ("error" in message) pending.reject(new Error(`QMP error: ${JSON.stringify(message.error)}`));
    else pending.resolve(message.return);
  }

  command<T = unknown>(execute: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error("QMP connection closed"));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`QMP ${execute}: no answer`)), QMP_TIMEOUT_MS);
      this.#pending = {
        resolve: (v) => (clearTimeout(timer), resolve(v as T)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.#socket.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + "\n");
    });
  }

  /** Waits for MIGRATION status "completed" (rejects on failed/cancelled). */
  async migrationCompleted(timeoutMs = MIGRATION_TIMEOUT_MS): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      while (this.events.length > 0) {
        const event = this.events.shift()!;
        if (event.event !== "MIGRATION") continue;
        const status = (event.data as { status: string }).status;
        if (status === "completed") return;
        if (status === "failed" || status === "cancelled") throw new Error(`migration ${status}`);
      }
      if (this.#closed) throw new Error("QMP connection closed during the migration");
      const left = deadline - performance.now();
      if (left <= 0) throw new Error("migration did not complete in time");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.#eventWaiter = () => (clearTimeout(timer), resolve());
      });
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}
