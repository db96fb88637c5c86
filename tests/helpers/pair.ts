/** A connected client/server pair of channels over loopback, for tests. */
import { type ChannelOptions, connect, listen, type Listener, type SocketChannel } from "../../mod.ts";

export interface Pair {
  client: SocketChannel;
  server: SocketChannel;
  listener: Listener;
  close(): void;
}

export async function channelPair(
  clientOptions: ChannelOptions = {},
  serverOptions: ChannelOptions = {},
  hostname = "127.0.0.1",
): Promise<Pair> {
  const listener = await listen({ hostname, port: 0, ...serverOptions });
  const [client, server] = await Promise.all([
    connect({ hostname, port: listener.port, ...clientOptions }),
    listener.accept(),
  ]);
  return {
    client,
    server,
    listener,
    close() {
      client.close();
      server.close();
      listener.close();
    },
  };
}

/** Resolves once `channel` has written nothing new for ~150 ms (its writer is blocked). */
export async function untilStalled(channel: SocketChannel, limitMs = 5_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  let last = -1;
  let still = 0;
  while (still < 8) {
    if (Date.now() > deadline) throw new Error("the writer never stalled");
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = channel.stats.bytesWritten;
    still = now === last && now > 0 ? still + 1 : 0;
    last = now;
  }
}
