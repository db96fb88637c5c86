/**
 * Where a runtime process spends its CPU, by kind of thread, over a window: the JS
 * Workers (a multifd transfer's channel Workers, and the reactor's), the JS engine's own
 * background threads (V8's compiler and GC helpers, JavaScriptCore's JIT and heap
 * threads), and the rest (the main thread and the runtime's I/O threads). A QEMU process
 * has no engine threads: that share is work only a JS runtime does.
 *
 * Read from /proc/PID/task/TID/stat every `intervalMs`, because a Worker's thread exits
 * at the end of a transfer and takes its counters with it: an exiting thread's CPU after
 * its last sample (at most one interval of it; a Worker is idle then) is not attributed.
 * Sampled every 200 ms by default: each sample reads every thread's file and costs CPU on
 * the machine under test, during our runs only (a QEMU process is not split).
 * @module
 */
import { readdirSync, readFileSync } from "node:fs";
import { round } from "../../util/format.ts";
import { statCpuSeconds } from "./proc.ts";

/** The kinds of thread a Deno or Bun process has. */
export const THREAD_KINDS = ["workers", "engine", "main"] as const;
export type ThreadKind = typeof THREAD_KINDS[number];

/** The name of a record's field with the CPU s/GB of one kind of thread: `${role}WorkersCpuSecondsPerGB`… */
export function threadCpuField(role: string, kind: ThreadKind): string {
  return role === "" ? `${kind}CpuSecondsPerGB` : `${role}${kind[0].toUpperCase()}${kind.slice(1)}CpuSecondsPerGB`;
}

/** `cpu` (CPU seconds per kind) per GB of `bytes`, as the fields {@link threadCpuField} names. */
export function threadCpuFields(role: string, cpu: Record<ThreadKind, number>, bytes: number): Record<string, number> {
  const fields: Record<string, number> = {};
  for (const kind of THREAD_KINDS) {
    fields[threadCpuField(role, kind)] = round(cpu[kind] / (bytes / 1e9));
  }
  return fields;
}

/**
 * The kind of a thread by its name (comm): Deno names Worker threads `worker-N` and V8's
 * `V8 DefaultWorker`; Bun names Workers `Worker`, JavaScriptCore's `JITWorker`,
 * `HeapHelper`, `Heap Collector`, `JSCWarmUp`, and mimalloc's `mi-scavenger`.
 */
export function threadKind(name: string): ThreadKind {
  if (/^worker-\d+$/.test(name) || name === "Worker") return "workers";
  if (/^V8 |JIT|Heap|ollector|JSC|scavenger/.test(name)) return "engine";
  return "main";
}

/** CPU seconds per kind of thread of one process from `start()` to `stop()`. */
export class ThreadCpu {
  readonly #pid: number;
  readonly #intervalMs: number;
  /** Per thread: its CPU when first seen (0 for threads born after the start) and its latest. */
  readonly #threads = new Map<string, { kind: ThreadKind; first: number; last: number }>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(pid: number, intervalMs = 200) {
    this.#pid = pid;
    this.#intervalMs = intervalMs;
  }

  /** Takes the baseline, then samples until {@link stop}. */
  start(): this {
    this.#sample(true);
    this.#timer = setInterval(() => this.#sample(false), this.#intervalMs);
    return this;
  }

  /** A last sample (if the process still runs; none if stopped already); CPU seconds per kind since {@link start}. */
  stop(): Record<ThreadKind, number> {
    if (this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#sample(false);
    }
    const totals = Object.fromEntries(THREAD_KINDS.map((kind) => [kind, 0])) as Record<ThreadKind, number>;
    for (const thread of this.#threads.values()) totals[thread.kind] += thread.last - thread.first;
    return totals;
  }

  #sample(baseline: boolean): void {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${this.#pid}/task`);
    } catch {
      return; // the process has exited
    }
    for (const tid of tids) {
      let stat: string;
      try {
        stat = readFileSync(`/proc/${this.#pid}/task/${tid}/stat`, "utf8");
      } catch {
        continue; // the thread exited meanwhile
      }
      // By its latest name: a new thread may get its name only after it started.
      const kind = threadKind(stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")));
      const cpu = statCpuSeconds(stat);
      const known = this.#threads.get(tid);
      if (known) {
        known.kind = kind;
        known.last = cpu;
      } else {
        this.#threads.set(tid, { kind, first: baseline ? cpu : 0, last: cpu });
      }
    }
  }
}
