/**
 * The channel Workers of one transfer, seen from the main thread: start-up handshake
 * ("ready" before anything is posted, since a message sent earlier would be lost),
 * waiting for one reply from every Worker, and shutdown.
 * @module
 */
import { ZeroCopyMultifdError } from "../errors.ts";
import type { WireError } from "./messages.ts";

/** A channel Worker failed; `channelId` says which, `cause` carries its error. */
export class ChannelFailedError extends ZeroCopyMultifdError {
  override name = "ChannelFailedError";
  readonly code: string | undefined;
  constructor(readonly channelId: number, readonly remote: WireError) {
    super(`channel ${channelId}: ${remote.name}: ${remote.message}`);
    this.code = remote.code;
  }
}

type Reply = { kind: string; error?: WireError };

export class WorkerPool<In, Out extends Reply> {
  readonly #workers: Worker[] = [];
  readonly #inboxes: Out[][] = [];
  readonly #waiters: (() => void)[] = [];
  /** Whether each Worker has finished (reported done or failed: it no longer uses its socket). */
  readonly #finished: boolean[] = [];
  #failure: Error | undefined;
  #onFailure: (error: Error) => void;

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
      pool.#finished.push(false);
      return new Promise<void>((resolve, reject) => {
        worker.onmessage = (event: MessageEvent<Out>) => {
          if (event.data.kind === "ready") return resolve();
          pool.#receive(id, event.data);
        };
        worker.onerror = (event) => {
          event.preventDefault?.();
          const error = new ChannelFailedError(id, { name: "WorkerError", message: event.message });
          reject(error);
          pool.#fail(error);
        };
      });
    });
    try {
      await Promise.all(ready);
    } catch (error) {
      for (const worker of pool.#workers) worker.terminate();
      throw error;
    }
    return pool;
  }

  get size(): number {
    return this.#workers.length;
  }

  post(id: number, message: In): void {
    this.#workers[id].postMessage(message);
  }

  /** The next message of one of `kinds` from Worker `id` (rejects once any Worker failed). */
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

  /** Ids of the Workers that have not reported done or failed. */
  unfinished(): number[] {
    return this.#finished.flatMap((done, id) => (done ? [] : [id]));
  }

  /**
   * Waits up to `graceMs` for every Worker to finish, then terminates all of them. Returns
   * the ids that had not finished.
   */
  async shutdown(graceMs: number): Promise<number[]> {
    const deadline = Date.now() + graceMs;
    while (this.unfinished().length > 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, Math.max(1, deadline - Date.now()));
      });
    }
    const stuck = this.unfinished();
    for (const worker of this.#workers) worker.terminate();
    this.#wake();
    return stuck;
  }

  #receive(id: number, message: Out): void {
    if (message.kind === "done" || message.kind === "failed") this.#finished[id] = true;
    if (message.kind === "failed" && message.error) {
      this.#fail(new ChannelFailedError(id, message.error));
      return;
    }
    this.#inboxes[id].push(message);
    this.#wake();
  }

  #fail(error: Error): void {
    if (!this.#failure) {
      this.#failure = error;
      this.#onFailure(error);
    }
    this.#wake();
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}
