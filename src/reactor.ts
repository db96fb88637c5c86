/**
 * Asynchronous readiness waits without blocking the event loop, the same way in Deno
 * and Bun: one helper Worker per process blocks in poll(2) on every fd that has a
 * pending wait, and wakes the main thread with a message when one is ready.
 *
 * Requests travel through a SharedArrayBuffer (slot table) plus an eventfd that interrupts
 * the Worker's poll; the Worker never returns to its own event loop while it runs, so
 * messages to it would not be read. A slot is armed by this thread, fired by the Worker,
 * and freed here, so no slot is ever written by both sides at once.
 *
 * The Worker exists only while something holds the reactor (`retain`/`release`), so an
 * idle process can exit.
 * @module
 */
import { native, Shutdown } from "../ffi/mod.ts";
import { SocketError, ZeroCopyMultifdError } from "./errors.ts";
import {
  FIELD_EVENTS,
  FIELD_FD,
  FIELD_REVENTS,
  FIELD_STATE,
  HEADER_SCAN,
  HEADER_STOP,
  MAX_WAITS,
  type ReactorInit,
  type ReactorReport,
  SLOT_ARMED,
  SLOT_FREE,
  slotBase,
} from "./reactor_layout.ts";

export class Reactor {
  static #instance: Reactor | undefined;

  /** The process-wide reactor, started on first use. */
  static get shared(): Reactor {
    return (Reactor.#instance ??= new Reactor());
  }

  #holders = 0;
  #worker: Worker | undefined;
  #ready: Promise<void> | undefined;
  #control = new Int32Array(new SharedArrayBuffer(0));
  #deadlines = new Float64Array(new SharedArrayBuffer(0));
  #eventfd = -1;
  #free: number[] = [];
  #pending = new Map<number, { resolve: (revents: number) => void; reject: (error: Error) => void }>();

  /** Keeps the helper Worker running for one more user (a channel or a listener). */
  retain(): void {
    this.#holders++;
  }

  /** @internal Whether the helper Worker runs (started, not stopped). For tests. */
  get running(): boolean {
    return this.#worker !== undefined;
  }

  /** @internal How many slots the Worker scans per wake-up (see HEADER_SCAN). For tests. */
  get scannedSlots(): number {
    return this.#control[HEADER_SCAN] ?? 0;
  }

  /** Resolves once the helper Worker runs (starting it if needed): a wait after it starts at once. */
  ready(): Promise<void> {
    return this.#start();
  }

  /** The inverse of retain; the Worker stops when nobody holds it and nothing waits. */
  release(): void {
    this.#holders--;
    if (this.#holders <= 0 && this.#pending.size === 0) this.#stop();
  }

  /**
   * Resolves with `fd`'s poll revents once any of `events` (or POLLERR/POLLHUP/POLLNVAL)
   * is ready, or with 0 after `timeoutMs` (negative = no limit).
   */
  async wait(fd: number, events: number, timeoutMs: number): Promise<number> {
    await this.#start();
    const slot = this.#free.pop();
    if (slot === undefined) throw new SocketError("poll", 24, `more than ${MAX_WAITS} concurrent waits`);
    // Before the slot is armed: the Worker scans up to this mark after the eventfd wakes it.
    if (slot >= this.#control[HEADER_SCAN]) Atomics.store(this.#control, HEADER_SCAN, slot + 1);
    const base = slotBase(slot);
    this.#control[base + FIELD_FD] = fd;
    this.#control[base + FIELD_EVENTS] = events;
    this.#control[base + FIELD_REVENTS] = 0;
    this.#deadlines[slot] = timeoutMs < 0 ? -1 : Date.now() + timeoutMs;
    const fired = new Promise<number>((resolve, reject) => this.#pending.set(slot, { resolve, reject }));
    Atomics.store(this.#control, base + FIELD_STATE, SLOT_ARMED);
    native.zc_eventfd_signal(this.#eventfd);
    return await fired;
  }

  #start(): Promise<void> {
    if (this.#ready) return this.#ready;
    const eventfd = native.zc_eventfd();
    if (eventfd < 0) throw new SocketError("eventfd", -eventfd);
    this.#eventfd = eventfd;
    const shared = new SharedArrayBuffer(slotBase(MAX_WAITS) * 4 + MAX_WAITS * 8);
    this.#control = new Int32Array(shared, 0, slotBase(MAX_WAITS));
    this.#deadlines = new Float64Array(shared, slotBase(MAX_WAITS) * 4, MAX_WAITS);
    this.#free = Array.from({ length: MAX_WAITS }, (_, i) => MAX_WAITS - 1 - i);
    const worker = new Worker(new URL("./reactor_worker.ts", import.meta.url), { type: "module" });
    this.#worker = worker;
    this.#ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent<ReactorReport>) => {
        const report = event.data;
        if (report.kind === "ready") {
          const init: ReactorInit = { shared, eventfd };
          worker.postMessage(init);
          resolve();
        } else if (report.kind === "fired") {
          this.#onFired(report.slots);
        } else if (report.kind === "failed") {
          this.#fail(new SocketError("poll", report.errno, "the reactor stopped"), reject);
        }
      };
      worker.onerror = (event) => {
        event.preventDefault?.();
        this.#fail(new ZeroCopyMultifdError(`the reactor Worker failed: ${event.message}`), reject);
      };
    });
    return this.#ready;
  }

  /** poll(2) itself failed: every wait fails, and the next wait starts a fresh Worker. */
  #fail(error: Error, rejectStart: (error: Error) => void): void {
    rejectStart(error);
    for (const waiter of this.#pending.values()) waiter.reject(error);
    this.#pending.clear();
    this.#worker?.terminate();
    if (this.#eventfd >= 0) native.zc_close(this.#eventfd);
    this.#worker = undefined;
    this.#ready = undefined;
    this.#eventfd = -1;
  }

  #onFired(slots: number[]): void {
    for (const slot of slots) {
      const base = slotBase(slot);
      const revents = this.#control[base + FIELD_REVENTS];
      Atomics.store(this.#control, base + FIELD_STATE, SLOT_FREE);
      this.#free.push(slot);
      const waiter = this.#pending.get(slot);
      this.#pending.delete(slot);
      waiter?.resolve(revents);
    }
    if (this.#holders <= 0 && this.#pending.size === 0) this.#stop();
  }

  #stop(): void {
    const worker = this.#worker;
    if (!worker) return;
    Atomics.store(this.#control, HEADER_STOP, 1);
    native.zc_eventfd_signal(this.#eventfd);
    const eventfd = this.#eventfd;
    worker.onmessage = (event: MessageEvent<ReactorReport>) => {
      if (event.data.kind !== "stopped") return;
      // The Worker has left poll(2): terminating it now cannot strand a blocked thread.
      worker.terminate();
      native.zc_close(eventfd);
    };
    this.#worker = undefined;
    this.#ready = undefined;
    this.#eventfd = -1;
  }
}

/**
 * One fd's use of the reactor. Holds the reactor while the fd is open, and never closes
 * the fd while a wait on it is in flight (shutdown wakes the wait first): otherwise the
 * fd number could be reused by a new file while the reactor still polls it, and that
 * wait would never end.
 */
export class FdWaits {
  #reactor: Reactor | undefined;
  #inFlight = 0;
  #closeWhenIdle = false;
  #onClosed: (() => void) | undefined;

  constructor(readonly fd: number) {}

  async wait(events: number, timeoutMs: number): Promise<number> {
    const reactor = this.#hold();
    this.#inFlight++;
    try {
      return await reactor.wait(this.fd, events, timeoutMs);
    } finally {
      if (--this.#inFlight === 0 && this.#closeWhenIdle) this.#close();
    }
  }

  /** Holds the reactor for this fd and resolves once it runs, ahead of a first wait. */
  ready(): Promise<void> {
    return this.#hold().ready();
  }

  #hold(): Reactor {
    if (!this.#reactor) {
      this.#reactor = Reactor.shared;
      this.#reactor.retain();
    }
    return this.#reactor;
  }

  /**
   * Closes the fd: now, or once the waits in flight (woken by a shutdown) have returned.
   * `onClosed` runs right after close(2) itself: until then the kernel may still read
   * memory that zero-copy sends queued on the socket.
   */
  close(onClosed?: () => void): void {
    this.#onClosed = onClosed;
    if (this.#inFlight === 0) return this.#close();
    this.#closeWhenIdle = true;
    native.zc_shutdown(this.fd, Shutdown.BOTH);
  }

  /** Lets go of the reactor without closing the fd (it changes owner). No wait may be in flight. */
  release(): void {
    this.#reactor?.release();
    this.#reactor = undefined;
  }

  get waiting(): boolean {
    return this.#inFlight > 0;
  }

  #close(): void {
    native.zc_close(this.fd);
    this.release();
    const onClosed = this.#onClosed;
    this.#onClosed = undefined;
    onClosed?.();
  }
}
