/**
 * Both ends of a multifd transfer in this process, over loopback, for the demo and the
 * live-migration example: a one-time secret (nothing is written anywhere), the receiver
 * listening and receiving into `destination`, the sender connected to it.
 * @module
 */
import { MultifdReceiver, MultifdSender, type ReceiverResult, type Region } from "../mod.ts";

export interface LoopbackPair {
  sender: MultifdSender;
  receiver: MultifdReceiver;
  /** The receiver's result; a failure there is reported by the sender too. */
  receiving: Promise<ReceiverResult>;
}

export async function loopbackPair(
  source: Region,
  destination: Region,
  options: { channels: number; zerocopy: boolean },
): Promise<LoopbackPair> {
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const receiver = await MultifdReceiver.listen({ hostname: "127.0.0.1", port: 0, secret });
  const receiving = receiver.receive(destination);
  receiving.catch(() => {}); // awaited by the caller
  try {
    const sender = await MultifdSender.connect(source, {
      hostname: "127.0.0.1",
      port: receiver.port,
      secret,
      // Both ends on this host: a short send queue keeps the delivery work (and, with
      // zero-copy, the kernel's deferred copy) on the sending side (README, "Same host").
      sendBufferBytes: 256 * 1024,
      ...options,
    });
    return { sender, receiver, receiving };
  } catch (error) {
    await receiver.abort();
    throw error;
  }
}
