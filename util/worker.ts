/**
 * A module Worker whose messages are taken as a queue. The Worker posts `{ kind: "ready" }`
 * once its `onmessage` is set (a message posted to it earlier would be lost); `ready()`
 * waits for that, `next()` takes each following message in order.
 * @module
 */

/** The message a Worker posts once it listens. */
export interface ReadyMessage {
  kind: "ready";
}

export class WorkerInbox<T> {
  readonly worker: Worker;
  readonly #label: string;
  #queue: T[] = [];
  #waiter: { resolve: (message: T) => void; reject: (error: Error) => void } | undefined;
  #failure: Error | undefined;

  /** Starts the Worker at `url`; `label` names it in errors ("worker failed: …"). */
  constructor(url: URL, label = "worker") {
    this.#label = label;
    this.worker = new Worker(url, { type: "module" });
    this.worker.onmessage = (event: MessageEvent<T>) => {
      if (this.#waiter) this.#waiter.resolve(event.data);
      else this.#queue.push(event.data);
    };
    this.worker.onerror = (event: ErrorEvent) => {
      event.preventDefault?.();
      this.#failure = new Error(`${label} failed: ${event.message}`);
      this.#waiter?.reject(this.#failure);
    };
  }

  /** Messages received and not yet taken. */
  get queued(): number {
    return this.#queue.length;
  }

  /** The next message; rejects once the Worker failed, or after `ms` (default: no limit). */
  next(ms = Infinity): Promise<T> {
    const queued = this.#queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise<T>((resolve, reject) => {
      const timer = Number.isFinite(ms)
        ? setTimeout(() => {
          this.#waiter = undefined;
          reject(new Error(`no message from the ${this.#label} within ${ms} ms`));
        }, ms)
        : undefined;
      const settle = () => (clearTimeout(timer), (this.#waiter = undefined));
      this.#waiter = {
        resolve: (message) => (settle(), resolve(message)),
        reject: (error) => (settle(), reject(error)),
      };
    });
  }

  /** Waits for the Worker's `{ kind: "ready" }` (its first message); then it may be posted to. */
  async ready(ms = Infinity): Promise<void> {
    const message = await this.next(ms);
    if ((message as Partial<ReadyMessage> | undefined)?.kind !== "ready") {
      throw new Error(`the ${this.#label} sent ${JSON.stringify(message)} before "ready"`);
    }
  }

  terminate(): void {
    this.worker.terminate();
  }
}
