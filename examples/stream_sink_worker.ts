/** The zerocopy_stream example's receiver: reads until EOF with blocking calls. */
import { SocketChannel } from "../mod.ts";

declare const self: {
  onmessage: ((event: MessageEvent<{ fd: number }>) => void) | null;
  postMessage(message: unknown): void;
};

self.onmessage = (event) => {
  const channel = new SocketChannel(event.data.fd);
  const buf = new Uint8Array(4 << 20);
  let total = 0;
  try {
    for (;;) {
      const n = channel.readFullSync(buf);
      total += n;
      if (n < buf.length) break;
    }
    self.postMessage({ bytes: total });
  } catch (error) {
    self.postMessage({ error: String(error) });
  } finally {
    channel.close();
  }
};
self.postMessage({ kind: "ready" });
