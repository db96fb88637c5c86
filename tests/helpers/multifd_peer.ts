/**
 * One end of a multifd transfer in its own process, for cross-runtime tests.
 *   recv SIZE SEED           prints "PORT <n>", receives, checks the bytes, prints a JSON line
 *   send PORT SIZE SEED CHANNELS ZEROCOPY(0|1) [CIPHER]   sends the pattern (encrypted with
 *                            CIPHER when given), prints a JSON line
 */
import process from "node:process";
import { type Cipher, MultifdReceiver, MultifdSender, Region, runtime } from "../../mod.ts";
import { fillPattern, SECRET } from "./multifd.ts";

const [mode, ...args] = process.argv.slice(2);
if (mode === "recv") {
  const [size, seed] = args.map(Number);
  const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 20_000 });
  console.log(`PORT ${receiver.port}`);
  const destination = Region.allocate(size);
  const result = await receiver.receive(destination);
  const expected = Region.allocate(size);
  fillPattern(expected, seed);
  console.log(
    JSON.stringify({
      runtime,
      verified: result.verified,
      equal: destination.equals(expected),
      bytes: result.bytes,
      encryption: result.encryption,
      checksum: result.checksumAlgorithm,
    }),
  );
  await destination.close();
  await expected.close();
} else if (mode === "send") {
  const [port, size, seed, channels, zerocopy] = args.map(Number);
  const cipher = args[5] as Cipher | undefined;
  const source = Region.allocate(size);
  fillPattern(source, seed);
  const sender = await MultifdSender.connect(source, {
    hostname: "127.0.0.1",
    port,
    secret: SECRET,
    channels,
    zerocopy: zerocopy === 1,
    encrypt: cipher ?? false,
    ioTimeoutMs: 20_000,
  });
  await sender.sendRound();
  const result = await sender.finish();
  const { verified, bytes, checksumAlgorithm: checksum } = result;
  console.log(JSON.stringify({ runtime, verified, bytes, checksum }));
  await source.close();
} else {
  console.error("usage: multifd_peer.ts recv SIZE SEED | send PORT SIZE SEED CHANNELS ZEROCOPY [CIPHER]");
  process.exit(2);
}
