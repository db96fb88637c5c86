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
export { abortSocket, type ChannelStats, SocketChannel } from "./src/socket_channel.ts";
export {
  type ChannelOptions,
  DEFAULT_FLUSH_TIMEOUT_MS,
  DEFAULT_IO_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_IDLE_S,
  DEFAULT_USER_TIMEOUT_MS,
  SAME_HOST_SEND_BUFFER_BYTES,
  SEND_BUFFER_BYTES,
} from "./src/channel_options.ts";
export {
  LOCKED_MEMORY_BUDGET_SHARE,
  lockedMemoryBudget,
  type LockedMemoryFacts,
  lockedMemoryFacts,
  MIN_ZEROCOPY_BUDGET_BYTES,
} from "./src/locked_memory.ts";
export {
  AuthenticationError,
  ChannelClosedError,
  EncryptionLimitError,
  InvalidArgumentError,
  SocketError,
  SystemError,
  TimeoutError,
  TransferAbortedError,
  ZeroCopyAccountingError,
  ZeroCopyCompletionError,
  ZeroCopyMultifdError,
  ZeroCopyResourceError,
  ZeroCopyUnsupportedError,
} from "./src/errors.ts";
export { ZeroCopyCompletions } from "./src/zerocopy_completions.ts";
export { type AllocateOptions, type CreateFileOptions, Region, type RegionDescriptor } from "./src/region.ts";
export { MultifdSender, type SenderOptions, type SenderPhase, type SenderResult } from "./src/multifd/sender.ts";
export {
  DEFAULT_MAX_PENDING_HANDSHAKES,
  DEFAULT_MAX_REGION_BYTES,
  type Destination,
  MAX_PENDING_HANDSHAKES,
  MultifdReceiver,
  type ReceiverOptions,
  type ReceiverResult,
} from "./src/multifd/receiver.ts";
export { type ChannelErrorInfo, ChannelFailedError } from "./src/multifd/worker_pool.ts";
export type { TransferStats } from "./src/multifd/stats.ts";
export { ACCEPT_BACKOFF_MS } from "./src/multifd/admission.ts";
export { WORKER_EXIT_GRACE_MS } from "./src/multifd/transfer.ts";
export { MIN_SECRET_BYTES, type Secret } from "./src/multifd/auth.ts";
export { type Cipher, DEFAULT_CIPHER } from "./src/multifd/aead.ts";
export type { ChecksumAlgorithm } from "./src/multifd/checksum.ts";
export {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_PAGES_PER_PACKET,
  MAX_CHANNELS,
  MAX_PAGES_PER_PACKET,
  MAX_REGION_BYTES,
  PAGE_SIZE,
  ProtocolError,
  TransferRefusedError,
} from "./src/multifd/wire.ts";
export { LIBRARY_ENV, NativeLibraryNotFoundError, runtime } from "./ffi/mod.ts";
export {
  MAX_QEMU_CHANNELS,
  QemuMigrationReceiver,
  type QemuRamBlock,
  type QemuReceiveResult,
  type QemuReceiverOptions,
} from "./src/qemu/receiver.ts";
export { QemuMigrationSender, type QemuSenderOptions, type QemuSendResult } from "./src/qemu/sender.ts";
