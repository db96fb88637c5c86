import { MultifdReceiver, MultifdSender, Region } from "../../mod.ts";
import { fillPattern, SECRET } from "./multifd.ts";
const size = 256 << 20;
for (let i = 0; i < Number(process.argv[2] ?? 10); i++) {
  const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 30_000 });
  const source = Region.allocate(size);
  const destination = Region.allocate(size);
  fillPattern(source, 7);
  const receiving = receiver.receive(destination);
  receiving.catch(() => {});
  const sender = await MultifdSender.connect(source, {
    hostname: "127.0.0.1",
    port: receiver.port,
    secret: SECRET,
    channels: 4,
    zerocopy: true,
    zerocopyFallback: false,
    ioTimeoutMs: 30_000,
  });
  await sender.sendRound();
  const sent = await sender.finish();
  const received = await receiving;
  const equal = destination.equals(source);
  const line = {
    i,
    sv: sent.verified,
    rv: received.verified,
    equal,
    sb: sent.bytes,
    rb: received.bytes,
    cs: sent.checksum,
    rcs: sent.remoteChecksum,
  };
  if (!sent.verified || !received.verified || !equal) {
    console.log("BAD", JSON.stringify(line), JSON.stringify(sent), JSON.stringify(received));
  } else console.log("ok", i);
  await source.close();
  await destination.close();
}
import process from "node:process";
