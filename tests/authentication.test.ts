// Mutual authentication (protocol version 2): a sender hands nothing of its region to a
// receiver that cannot prove it knows the secret — an impostor that speaks the protocol,
// one with the wrong secret, one replaying what a real receiver said in an earlier session
// — neither through the library nor through the CLI; and a version 1 peer gets a clear error.
import { after, before, describe, test } from "node:test";
import { concatBytes } from "../util/bytes.ts";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  AuthenticationError,
  ChannelClosedError,
  listen,
  type Listener,
  MultifdReceiver,
  MultifdSender,
  Region,
  type SocketChannel,
  TimeoutError,
} from "../mod.ts";
import { importSecret, newNonce, type SecretKeys, signInitAck, verifyInitAck } from "../src/multifd/auth.ts";
import {
  encodeHello,
  encodeReply,
  HELLO_BYTES,
  INIT_ACK_BYTES,
  INIT_BYTES,
  parseHello,
  ProtocolError,
  ReplyType,
} from "../src/multifd/wire.ts";
import { run } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";
import { oneChannelInit, openRaw, signedInit, transcriptOf } from "./helpers/hostile_client.ts";
import { fillPattern, SECRET } from "./helpers/multifd.ts";

const OTHER_SECRET = "not the secret, but just as long";
const SIZE = 4 << 20;
const cli = fileURLToPath(new URL("../examples/migrate.ts", import.meta.url));

/** What a fake receiver says on each connection: its HELLO, then its INIT_ACK ‖ MAC for the INIT it got. */
type Script = { hello: () => Promise<Uint8Array>; ack: (hello: Uint8Array, init: Uint8Array) => Promise<Uint8Array> };

/**
 * A receiver without the secret: it plays `script` on every connection, then reads whatever
 * the sender sends until the connection ends. `afterInit` counts the bytes that came after
 * the INIT: region data, had the sender been fooled.
 */
async function fakeReceiver(script: Script) {
  const listener: Listener = await listen({ hostname: "127.0.0.1", port: 0, ioTimeoutMs: 5_000 });
  const tally = { connections: 0, afterInit: 0 };
  const served: Promise<void>[] = [];
  const serveOne = async (channel: SocketChannel) => {
    try {
      const hello = await script.hello();
      await channel.writev([hello]);
      const init = new Uint8Array(INIT_BYTES);
      if (await channel.readFull(init) < INIT_BYTES) return;
      await channel.writev([await script.ack(hello, init)]);
      const sink = new Uint8Array(1 << 16);
      for (;;) {
        const got = await channel.readFull(sink.subarray(0, 1));
        if (got === 0) return;
        tally.afterInit += got;
      }
    } catch {
      // The sender hung up (reset), or 5 s passed: either way, count what came.
    } finally {
      channel.close();
    }
  };
  const accepting = (async () => {
    for (;;) {
      let channel: SocketChannel;
      try {
        channel = await listener.accept();
      } catch {
        return;
      }
      tally.connections++;
      served.push(serveOne(channel));
    }
  })();
  return {
    port: listener.port,
    tally,
    async close() {
      listener.close();
      await accepting;
      await Promise.all(served);
    },
  };
}

/**
 * What a real receiver said in an earlier session, byte for byte: its HELLO and its
 * INIT_ACK ‖ MAC, to a sender with the right secret.
 */
async function recordRealReceiver(keys: SecretKeys): Promise<{ hello: Uint8Array; ack: Uint8Array }> {
  const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 2_000 });
  const destination = Region.allocate(SIZE);
  const receiving = receiver.receive(destination).catch(() => {});
  try {
    const channel = await openRaw(receiver.port);
    try {
      const hello = new Uint8Array(HELLO_BYTES);
      assert.equal(await channel.readFull(hello), HELLO_BYTES);
      const init = await signedInit(keys, parseHello(hello).nonce, oneChannelInit(SIZE, 128));
      await channel.writev([init]);
      const ack = new Uint8Array(INIT_ACK_BYTES);
      assert.equal(await channel.readFull(ack), INIT_ACK_BYTES);
      // A genuine proof, for that session's nonces.
      assert.ok(
        await verifyInitAck(keys, transcriptOf(parseHello(hello).nonce, init), ack.subarray(0, 32), ack.subarray(32)),
      );
      return { hello, ack };
    } finally {
      channel.close();
    }
  } finally {
    await receiver.abort();
    await receiving;
    await destination.close();
  }
}

describe("mutual authentication", () => {
  let source: Region;
  let keys: SecretKeys;
  let wrongKeys: SecretKeys;
  let recorded: { hello: Uint8Array; ack: Uint8Array };
  let dir: string;

  before(async () => {
    source = Region.allocate(SIZE);
    fillPattern(source, 41);
    keys = await importSecret(SECRET);
    wrongKeys = await importSecret(OTHER_SECRET);
    recorded = await recordRealReceiver(keys);
    dir = mkdtempSync(join(tmpdir(), "zcmf-auth-"));
  });
  after(async () => {
    await source.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const ack = () => encodeReply({ type: ReplyType.INIT_ACK, value: 0n, bytes: 0, status: 0 });
  /** `silent`: it never sends a proof, so the sender's handshake times out (TimeoutError) instead. */
  const impostors: { name: string; script: () => Script; silent?: boolean }[] = [
    {
      name: "replays a real receiver's HELLO and INIT_ACK from an earlier session",
      script: () => ({
        hello: () => Promise.resolve(recorded.hello),
        ack: () => Promise.resolve(recorded.ack),
      }),
    },
    {
      name: "speaks the protocol but signs with another secret",
      script: () => ({
        hello: () => Promise.resolve(encodeHello(newNonce())),
        ack: async (hello, init) => {
          const reply = ack();
          const mac = await signInitAck(wrongKeys, transcriptOf(hello.slice(8, 40), init), reply);
          return concatBytes(reply, mac);
        },
      }),
    },
    {
      name: "speaks the protocol, with no MAC at all (a version 1 style INIT_ACK, then silence)",
      silent: true,
      script: () => ({
        hello: () => Promise.resolve(encodeHello(newNonce())),
        ack: () => Promise.resolve(ack()),
      }),
    },
    {
      name: "reflects the sender's own INIT MAC back as its proof",
      script: () => ({
        hello: () => Promise.resolve(encodeHello(newNonce())),
        ack: (_, init) => Promise.resolve(concatBytes(ack(), init.subarray(INIT_BYTES - 32))),
      }),
    },
  ];

  for (const impostor of impostors) {
    const outcome = impostor.silent ? "TimeoutError" : "AuthenticationError";
    test(`library: a receiver that ${impostor.name}: ${outcome}, and no region byte`, async () => {
      const fake = await fakeReceiver(impostor.script());
      try {
        const connecting = MultifdSender.connect(source, {
          hostname: "127.0.0.1",
          port: fake.port,
          secret: SECRET,
          channels: 2,
          handshakeTimeoutMs: 3_000,
        });
        await assert.rejects(connecting, (error: Error) => {
          if (impostor.silent) {
            assert.ok(error instanceof TimeoutError, `${error.name}: ${error.message}`);
          } else {
            assert.ok(error instanceof AuthenticationError, `${error.name}: ${error.message}`);
            assert.match(error.message, /did not prove that it knows the secret/);
          }
          return true;
        });
      } finally {
        await fake.close();
      }
      assert.ok(fake.tally.connections >= 1);
      assert.equal(fake.tally.afterInit, 0, "the sender sent something after its INIT");
    });
  }

  test("CLI: send to a receiver replaying an earlier session exits 1, names the cause, sends no byte of the file", async () => {
    const input = join(dir, "in.bin");
    writeFileSync(input, source.view());
    const secretFile = join(dir, "secret.key");
    writeFileSync(secretFile, SECRET, { mode: 0o600 });
    const fake = await fakeReceiver(impostors[0].script());
    let result;
    try {
      result = await run(
        runtimeArgv(cli, ["send", "--to", `127.0.0.1:${fake.port}`, "--file", input, "--secret-file", secretFile]),
        60_000,
      );
    } finally {
      await fake.close();
    }
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /did not prove that it knows the secret/);
    assert.equal(fake.tally.afterInit, 0, "the CLI sent something after its INIT");
  });

  test("a receiver with another secret: the sender fails, nothing lands, then the right sender gets through", async () => {
    const receiver = await MultifdReceiver.listen({ secret: OTHER_SECRET });
    const destination = Region.allocate(SIZE);
    const receiving = receiver.receive(destination);
    try {
      await assert.rejects(
        MultifdSender.connect(source, { hostname: "127.0.0.1", port: receiver.port, secret: SECRET, channels: 2 }),
        (error: Error) => {
          assert.ok(error instanceof ChannelClosedError, `${error.name}: ${error.message}`);
          assert.match(error.message, /wrong secret, or it refused the channel/);
          return true;
        },
      );
      assert.ok(destination.view().every((byte) => byte === 0), "something landed in the destination");
      // The receiver ignored the stranger and still serves a sender with its secret.
      const sender = await MultifdSender.connect(source, {
        hostname: "127.0.0.1",
        port: receiver.port,
        secret: OTHER_SECRET,
      });
      await sender.sendRound();
      const [sent, received] = await Promise.all([sender.finish(), receiving]);
      assert.equal(sent.verified && received.verified, true);
      assert.ok(received.rejectedConnections >= 2, `${received.rejectedConnections} connections refused`);
    } finally {
      await receiver.abort();
      await destination.close();
    }
  });

  test("the real receiver proves itself: a sender with the right secret transfers and verifies", async () => {
    const receiver = await MultifdReceiver.listen({ secret: SECRET });
    const destination = Region.allocate(SIZE);
    const receiving = receiver.receive(destination);
    const sender = await MultifdSender.connect(source, { hostname: "127.0.0.1", port: receiver.port, secret: SECRET });
    await sender.sendRound();
    const [sent, received] = await Promise.all([sender.finish(), receiving]);
    assert.equal(sent.verified && received.verified, true);
    assert.ok(destination.equals(source));
    await destination.close();
  });

  test("a version 1 receiver: the sender fails at once with a ProtocolError naming the versions", async () => {
    const v1 = await fakeReceiver({
      hello: () => {
        const hello = encodeHello(newNonce());
        hello[5] = 1;
        return Promise.resolve(hello);
      },
      ack: () => Promise.resolve(ack()),
    });
    try {
      await assert.rejects(
        MultifdSender.connect(source, { hostname: "127.0.0.1", port: v1.port, secret: SECRET, channels: 1 }),
        (error: Error) => {
          assert.ok(error instanceof ProtocolError, `${error.name}: ${error.message}`);
          assert.match(error.message, /receiver speaks protocol version 1, an older zerocopy-multifd: upgrade it/);
          return true;
        },
      );
    } finally {
      await v1.close();
    }
    assert.equal(v1.tally.afterInit, 0);
  });

  test("the receiver's HELLO says version 2: a version 1 sender's own check stops it before its INIT", async () => {
    const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 1_000 });
    const destination = Region.allocate(SIZE);
    const receiving = receiver.receive(destination).catch(() => {});
    try {
      const channel = await openRaw(receiver.port);
      const hello = new Uint8Array(HELLO_BYTES);
      assert.equal(await channel.readFull(hello), HELLO_BYTES);
      assert.equal(new DataView(hello.buffer).getUint16(4), 2);
      channel.close();
    } finally {
      await receiver.abort();
      await receiving;
      await destination.close();
    }
  });
});
