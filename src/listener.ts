/**
 * A listening TCP socket whose `accept` resolves with {@link SocketChannel}s.
 *
 * ```ts
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * const channel = await listener.accept();
 * ```
 * @module
 */
import { Errno, native, Poll, SocketOption } from "../ffi/mod.ts";
import { resolveAddress } from "./address.ts";
import { ChannelClosedError, InvalidArgumentError, SocketError, TimeoutError } from "./errors.ts";
import { FdWaits } from "./reactor.ts";
import { type ChannelOptions, checkChannelOptions } from "./channel_options.ts";
import { SocketChannel } from "./socket_channel.ts";

/**
 * Where {@link listen} binds, and the channel options every accepted {@link SocketChannel}
 * gets.
 *
 * @example Accept zero-copy channels on a free port
 * ```ts
 * import { listen, type ListenOptions } from "zerocopy-multifd";
 *
 * const options: ListenOptions = { hostname: "0.0.0.0", port: 0, zerocopy: true, ioTimeoutMs: 30_000 };
 * const listener = await listen(options);
 * console.log("listening on port", listener.port);
 * const channel = await listener.accept();
 * ```
 */
export interface ListenOptions extends ChannelOptions {
  /** IP literal or name to bind. Default "127.0.0.1". */
  hostname?: string;
  /** Port to bind; 0 (the default) picks a free one, see {@link Listener.port}. */
  port?: number;
  /** Length of the kernel's queue of not-yet-accepted connections. Default 128. */
  backlog?: number;
}

/** Creates a listener; accepted channels get the channel options given here. */
export async function listen(options: ListenOptions = {}): Promise<Listener> {
  const { hostname = "127.0.0.1", port = 0, backlog = 128 } = options;
  checkPort(port);
  checkChannelOptions(options); // refused here, not by every accept
  const address = await resolveAddress(hostname);
  const fd = native.zc_socket(address.family);
  if (fd < 0) throw new SocketError("socket", -fd);
  const fail = (operation: string, rc: number): never => {
    native.zc_close(fd);
    throw new SocketError(operation, -rc, `${hostname}:${port}`);
  };
  native.zc_set_option(fd, SocketOption.reuseAddress, 1);
  const bound = native.zc_bind(fd, address.family, address.bytes, port, address.scopeId);
  if (bound < 0) fail("bind", bound);
  const listening = native.zc_listen(fd, backlog);
  if (listening < 0) fail("listen", listening);
  const localPort = native.zc_local_port(fd);
  if (localPort < 0) fail("getsockname", localPort);
  return new Listener(fd, hostname, localPort, options);
}

/**
 * A listening TCP socket, made by {@link listen}: {@link Listener.accept} resolves with one
 * {@link SocketChannel} per incoming connection.
 *
 * @example Serve connections until closed
 * ```ts
 * import { ChannelClosedError, listen } from "zerocopy-multifd";
 *
 * const listener = await listen({ port: 9000 });
 * try {
 *   for (;;) {
 *     const channel = await listener.accept();
 *     const header = new Uint8Array(16);
 *     await channel.readFull(header);
 *     channel.close();
 *   }
 * } catch (error) {
 *   if (!(error instanceof ChannelClosedError)) throw error; // listener.close() ends the loop
 * }
 * ```
 */
export class Listener {
  #closed = false;
  readonly #waits: FdWaits;

  /**
   * @internal Adopts a bound, listening, non-blocking socket fd; use {@link listen}.
   */
  constructor(
    /** The listening socket's file descriptor. */
    readonly fd: number,
    /** The address as given to {@link listen}. */
    readonly hostname: string,
    /** The bound port (the kernel's choice when 0 was asked). */
    readonly port: number,
    /** Options every accepted channel is created with. */
    readonly channelOptions: ChannelOptions,
  ) {
    this.#waits = new FdWaits(fd);
  }

  /**
   * Resolves with the next incoming connection. Rejects with ChannelClosedError once the
   * listener is closed, TimeoutError after `timeoutMs` (default: no limit).
   */
  async accept(timeoutMs: number = -1): Promise<SocketChannel> {
    for (;;) {
      if (this.#closed) throw new ChannelClosedError("listener is closed");
      const fd = native.zc_accept(this.fd);
      if (fd >= 0) {
        try {
          return new SocketChannel(fd, this.channelOptions);
        } catch (error) {
          native.zc_close(fd); // never leak the accepted connection
          throw error;
        }
      }
      const errno = -fd;
      // A connection reset while queued is the peer's problem, not the listener's.
      if (errno === Errno.EINTR || errno === Errno.ECONNABORTED) continue;
      if (errno !== Errno.EAGAIN) throw new SocketError("accept", errno);
      const revents = await this.#waits.wait(Poll.IN, timeoutMs);
      if (revents === 0) throw new TimeoutError("accept", timeoutMs);
    }
  }

  /**
   * Starts what waiting for a connection needs (the reactor's helper Worker, tens of ms)
   * ahead of the first {@link accept}, so that a connection arriving right after is taken
   * at once. The listener holds it until closed.
   */
  async prepare(): Promise<void> {
    if (this.#closed) throw new ChannelClosedError("listener is closed");
    await this.#waits.ready();
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Stops listening; pending `accept` calls reject. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#waits.close();
  }

  /** Closes the listener at the end of a `using` block, as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

export function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError(`port must be an integer in 0..65535, got ${port}`);
  }
}
