/**
 * Aborts a running multifd transfer from one side (argv[2]: "sender" or "receiver") and
 * prints what each side saw as one JSON line. Must then exit on its own: a Worker or
 * socket left behind would keep the process alive.
 */
import process from "node:process";
import { MultifdReceiver, MultifdSender, Region } from "../../mod.ts";
import { fillPattern, openTcpSockets, SECRET } from "./multifd.ts";

const side = process.argv[2];
const socketsBefore = openTcpSockets();
const size = 128 << 20;
const source = Region.allocate(size);
fillPattern(source, 1);
const destination = Region.allocate(size);
const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 10_000 });
const describe = (p: Promise<unknown>) => p.then(() => "no error", (e: Error) => `${e.name}: ${e.message}`);
const receiving = describe(receiver.receive(destination));
const sender = await MultifdSender.connect(source, {
  hostname: "127.0.0.1",
  port: receiver.port,
  secret: SECRET,
  channels: 4,
  zerocopy: true,
  ioTimeoutMs: 10_000,
});
const sending = describe((async () => {
  for (let round = 0; round < 100; round++) await sender.sendRound();
  return await sender.finish();
})());
while (sender.bytesSent < 32 << 20) await new Promise((resolve) => setTimeout(resolve, 5));
const abortedAt = performance.now();
if (side === "sender") await sender.abort("test abort");
else await receiver.abort("test abort");
const [senderError, receiverError] = await Promise.all([sending, receiving]);
const settledMs = Math.round(performance.now() - abortedAt);
await source.close();
await destination.close();
await new Promise((resolve) => setTimeout(resolve, 200));
console.log(
  JSON.stringify({ side, senderError, receiverError, settledMs, socketsBefore, socketsAfter: openTcpSockets() }),
);
