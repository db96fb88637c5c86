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
