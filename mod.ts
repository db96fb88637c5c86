/**
 * zerocopy-multifd: MSG_ZEROCOPY socket writes for Deno and Bun.
 *
 * ```ts
 * import { connect, listen } from "zerocopy-multifd";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * const [client, server] = await Promise.all([
 *   connect({ hostname: "127.0.0.1", port: listener.port, zerocopy: true }),
 *   listener.accept(),
 * ]);
 * const data = new Uint8Array(1 << 20).fill(7);
 * await client.writevZerocopy([data]); // keep `data` unmodified…
 * await client.flushZerocopy(); // …until the flush resolves (1 on loopback: all copied)
 * await server.readFull(new Uint8Array(data.length));
 * client.close(), server.close(), listener.close();
 * ```
 * @module
 */
export { connect, type ConnectOptions, DEFAULT_CONNECT_TIMEOUT_MS } from "./src/connect.ts";
export { listen, Listener, type ListenOptions } from "./src/listener.ts";
export {
  abortSocket,
  type ChannelOptions,
  type ChannelStats,
  DEFAULT_FLUSH_TIMEOUT_MS,
  DEFAULT_IO_TIMEOUT_MS,
  SocketChannel,
} from "./src/socket_channel.ts";
export {
  ChannelClosedError,
  InvalidArgumentError,
  SocketError,
  TimeoutError,
  ZeroCopyAccountingError,
  ZeroCopyCompletionError,
  ZeroCopyMultifdError,
  ZeroCopyResourceError,
  ZeroCopyUnsupportedError,
} from "./src/errors.ts";
export { ZeroCopyCompletions } from "./src/zerocopy_completions.ts";
export { LIBRARY_ENV, NativeLibraryNotFoundError, runtime } from "./ffi/mod.ts";
