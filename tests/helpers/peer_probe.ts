/**
 * For the same-host test, in a network namespace of its own:
 *   peer_probe.ts listen IP     listens on IP, prints "PORT n", accepts one connection, holds it
 *   peer_probe.ts connect IP PORT   connects with the module, prints {"peerOnThisHost": …}
 */
import process from "node:process";
import { connect, listen } from "../../mod.ts";

const [mode, ip, port] = process.argv.slice(2);
if (mode === "listen") {
  const listener = await listen({ hostname: ip, port: 0 });
  console.log(`PORT ${listener.port}`);
  const channel = await listener.accept(20_000);
  await channel.readFull(new Uint8Array(1)); // until the other side closes
  channel.close();
  listener.close();
} else {
  const channel = await connect({ hostname: ip, port: Number(port) });
  console.log(JSON.stringify({ peerOnThisHost: channel.peerOnThisHost }));
  channel.close();
}
