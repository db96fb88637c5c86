/**
 * Opening a client {@link SocketChannel}.
 * @module
 */
import { Errno, native, Poll, SocketOption } from "../ffi/mod.ts";
import { resolveAddress } from "./address.ts";
import { InvalidArgumentError, SocketError, TimeoutError } from "./errors.ts";
import { checkPort } from "./listener.ts";
import { FdWaits } from "./reactor.ts";
import { type ChannelOptions, checkChannelOptions } from "./channel_options.ts";
import { SocketChannel } from "./socket_channel.ts";

/** Default limit for establishing a connection (ms). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * Where {@link connect} connects to, how long it may take, and the options of the
 * resulting {@link SocketChannel}.
 *
 * @example A zero-copy client with a short connect limit
 * ```ts
 * import { connect, type ConnectOptions } from "zerocopy-multifd";
 *
 * const options: ConnectOptions = { hostname: "10.0.0.2", port: 4444, zerocopy: true, connectTimeoutMs: 3_000 };
 * const channel = await connect(options);
 * console.log(channel.zerocopy); // false if the kernel refused SO_ZEROCOPY
 * channel.close();
 * ```
 */
export interface ConnectOptions extends ChannelOptions {
  /** IP literal (IPv4, IPv6, `[::1]`) or a name to resolve. */
  hostname: string;
  /** TCP port, 1..65535. */
  port: number;
  /** Limit for the TCP handshake, in ms. Default {@link DEFAULT_CONNECT_TIMEOUT_MS}. */
  connectTimeoutMs?: number;
}

/** Connects to `hostname:port`; with `zerocopy: true` the channel can use writevZerocopy. */
export async function connect(options: ConnectOptions): Promise<SocketChannel> {
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgumentError("connect needs an options object with hostname and port");
  }
  const { hostname, port, connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS } = options;
  checkPort(port);
  if (port === 0) throw new InvalidArgumentError("cannot connect to port 0");
  checkChannelOptions(options); // refused before connecting, not by the channel after it
  const address = await resolveAddress(hostname);
  const fd = native.zc_socket(address.family);
  if (fd < 0) throw new SocketError("socket", -fd);
  const waits = new FdWaits(fd);
  try {
    const rc = native.zc_connect(fd, address.family, address.bytes, port, address.scopeId);
    if (rc < 0 && -rc !== Errno.EINPROGRESS) throw new SocketError("connect", -rc, `${hostname}:${port}`);
    if (rc < 0) {
      // On one host the handshake is often over already: no round trip to the reactor (whose
      // Worker, started by the first wait, costs about 0.1 s under Deno).
      let revents = native.zc_poll_one(fd, Poll.OUT, 0);
      if (revents <= 0) revents = await waits.wait(Poll.OUT, connectTimeoutMs);
      if (revents === 0) throw new TimeoutError("connect", connectTimeoutMs, `${hostname}:${port}`);
      const error = native.zc_get_option(fd, SocketOption.pendingError);
      if (error !== 0) throw new SocketError("connect", error < 0 ? -error : error, `${hostname}:${port}`);
    }
    waits.release();
    return new SocketChannel(fd, options);
  } catch (error) {
    waits.close();
    throw error;
  }
}
