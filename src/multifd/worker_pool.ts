/**
 * The channel Workers of one transfer, seen from the main thread: start-up handshake
 * ("ready" before anything is posted, since a message sent earlier would be lost),
 * waiting for one reply from every Worker, and shutdown.
 * @module
 */
import { ZeroCopyMultifdError } from "../errors.ts";
import type { ChannelErrorInfo } from "./messages.ts";

export type { ChannelErrorInfo };

/**
 * A channel Worker of a multifd transfer failed; `channelId` says which, `remote` carries
 * its error. The transfer is aborted.
 *
 * @example Tell which channel broke, and why
 * ```ts
 * import { ChannelFailedError, type MultifdSender } from "zerocopy-multifd";
 *
 * async function finishOrExplain(sender: MultifdSender): Promise<void> {
 *   try {
 *     await sender.finish();
 *   } catch (error) {
 *     if (error instanceof ChannelFailedError) {
 *       console.error(`channel ${error.channelId} failed: ${error.remote.name} (${error.code ?? "no errno"})`);
 *     }
 *     throw error;
 *   }
 * }
 * ```
 */
export class ChannelFailedError extends ZeroCopyMultifdError {
  /** Always "ChannelFailedError", so errors stay recognisable in logs and across Workers. */
  override name = "ChannelFailedError";
  /** The Worker error's `code` (an errno name such as "ECONNRESET"), if it had one. */
  readonly code: string | undefined;
  /** `channelId`: the failed channel (0-based); `remote`: the error its Worker reported. */
  constructor(readonly channelId: number, readonly remote: ChannelErrorInfo) {
    super(`channel ${channelId}: ${remote.name}: ${remote.message}`);
    this.code = remote.code;
  }
}

type Reply = { kind: string; error?: ChannelErrorInfo };

export class WorkerPool<In, Out extends Reply> {
  static #running = 0;
  readonly #workers: Worker[] = [];
  readonly #inboxes: Out[][] = [];
  readonly #waiters: (() => void)[] = [];
  /** Whether each Worker is known to be out of every native call for good (said "exited", or died). */
  readonly #exited: boolean[] = [];
  /** Whether each Worker was given anything to do: one that was not runs no native call. */
  readonly #given: boolean[] = [];
  #failure: Error | undefined;
  #onFailure: (error: Error) => void;
  #shutdown: Promise<number[]> | undefined;

  /**
   * @internal Channel Workers in this thread not known to have exited (started, and not
   * yet confirmed out or dead): 0 whenever no transfer runs. For tests.
   */
  static get running(): number {
    return WorkerPool.#running;
  }

  private constructor(onFailure: (error: Error) => void) {
    this.#onFailure = onFailure;
  }

  /** Starts `count` Workers from `url` and resolves once every one is listening. */
  static async start<In, Out extends Reply>(
    url: URL,
    count: number,
    onFailure: (error: Error) => void,
  ): Promise<WorkerPool<In, Out>> {
    const pool = new WorkerPool<In, Out>(onFailure);
    const ready = Array.from({ length: count }, (_, id) => {
      const worker = new Worker(url, { type: "module" });
      pool.#workers.push(worker);
      pool.#inboxes.push([]);
      pool.#exited.push(false);
      pool.#given.push(false);
      WorkerPool.#running++;
      return new Promise<void>((resolve, reject) => {
        worker.onmessage = (event: MessageEvent<Out>) => {
          if (event.data.kind === "ready") return resolve();
          pool.#receive(id, event.data);
        };
        worker.onerror = (event) => {
          event.preventDefault?.();
          // An uncaught error ends the Worker's script: it runs no native call any more.
          pool.#markExited(id);
          const error = new ChannelFailedError(id, { name: "WorkerError", message: event.message });
          reject(error);
          pool.fail(error);
        };
      });
    });
    try {
      await Promise.all(ready);
    } catch (error) {
      // No Worker has been given anything yet: none can be inside a native call.
      for (const worker of pool.#workers) worker.terminate();
      pool.#workers.forEach((_, id) => pool.#markExited(id));
      throw error;
    }
    return pool;
  }

  get size(): number {
    return this.#workers.length;
  }

  post(id: number, message: In): void {
    this.#given[id] = true;
    this.#workers[id].postMessage(message);
  }

  /** The next message of one of `kinds` from Worker `id` (rejects once the pool failed). */
  async next<K extends Out["kind"]>(id: number, ...kinds: K[]): Promise<Extract<Out, { kind: K }>> {
    for (;;) {
      if (this.#failure) throw this.#failure;
      const inbox = this.#inboxes[id];
      const at = inbox.findIndex((m) => (kinds as string[]).includes(m.kind));
      if (at >= 0) return inbox.splice(at, 1)[0] as Extract<Out, { kind: K }>;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** One message of one of `kinds` from every Worker, in channel order. */
  all<K extends Out["kind"]>(...kinds: K[]): Promise<Extract<Out, { kind: K }>[]> {
    return Promise.all(this.#workers.map((_, id) => this.next(id, ...kinds)));
  }

  /** Fails the pool: every pending and later {@link next} rejects with the first error. */
  fail(error: Error): void {
    if (!this.#failure) {
      this.#failure = error;
      this.#onFailure(error);
    }
    this.#wake();
  }

  /**
   * Asks every Worker to exit and waits, up to `graceMs`, until each has said so (it
   * finishes the message it is handling first: wake blocked ones by shutting their sockets
   * down and raising the abort flag before), then terminates them all. Resolves with the
   * ids of Workers that never confirmed and had been given something (one never posted to
   * runs no native call): they may still be inside one, so the caller must not unmap the
   * region or close an fd they use. Idempotent.
   */
  shutdown(graceMs: number): Promise<number[]> {
    return (this.#shutdown ??= this.#stop(graceMs));
  }

  async #stop(graceMs: number): Promise<number[]> {
    for (const worker of this.#workers) worker.postMessage({ kind: "exit" });
    const deadline = Date.now() + graceMs;
    while (this.#exited.includes(false) && Date.now() < deadline) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
      });
      clearTimeout(timer); // a pending timer would keep the process alive until the deadline
    }
    for (const worker of this.#workers) worker.terminate();
    // One never given anything was idle (e.g. a transfer that failed before its start, with
    // no grace to wait for its "exited"): terminated, it is out for good.
    this.#given.forEach((given, id) => given || this.#markExited(id));
    this.#wake();
    return this.#exited.flatMap((exited, id) => (exited ? [] : [id]));
  }

  #receive(id: number, message: Out): void {
    if (message.kind === "exited") this.#markExited(id);
    if (message.kind === "failed" && message.error) {
      this.fail(new ChannelFailedError(id, message.error));
      return;
    }
    this.#inboxes[id].push(message);
    this.#wake();
  }

  #markExited(id: number): void {
    if (this.#exited[id]) return;
    this.#exited[id] = true;
    WorkerPool.#running--;
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}
