/**
 * One multifd channel (QEMU: a send or a receive thread), on either side and for any wire
 * format (codec.ts): the socket, rounds, SYNC, zero-copy flushes, the barrier, counters
 * and the checksum are here, once; the bytes of each packet are the codec's. Blocking
 * calls only: this thread has nothing else to do.
 *
 * Sending: packets of the current round are claimed from the shared cursor, so work goes
 * to whichever channel is free; page data is read straight from the region, the head is
 * copied and the pages go zero-copy when enabled. Receiving: each packet lands straight in
 * the region; at SYNC the channel waits at the shared barrier until every channel reached
 * it, so a page of a later round can never be overwritten by an older copy arriving late.
 * @module
 */
import { addressOf, Errno, native } from "../../ffi/mod.ts";
import { ChannelClosedError, TimeoutError, unbackedPagesError, ZeroCopyUnsupportedError } from "../errors.ts";
import type { RegionDescriptor } from "../region.ts";
import { SocketChannel } from "../socket_channel.ts";
import { readWirePagesSync, readWireRunSync } from "../wire_reads.ts";
import { RunZeroPages, type SendRun, sendWireRunSync } from "../wire_writes.ts";
import { hashBlocks } from "./checksum.ts";
import type {
  Outgoing,
  PacketInput,
  Populate,
  ReadRanges,
  ReadWirePages,
  ReadWireRun,
  ReceiveCodec,
  SendCodec,
  WireFormat,
} from "./codec.ts";
import type { ChannelConfig, FromReceiver, FromSender, SenderConfig, ToReceiver, ToSender } from "./messages.ts";
import { serveChannelWorker, zerocopyFallbackSends } from "./messages.ts";
import { packetOffsets, PageScan, Ranges } from "./packet.ts";
import { plainFormat } from "./plain_codec.ts";
import { sealedFormat } from "./sealed_codec.ts";
import { qemuFormat } from "../qemu/qemu_codec.ts";
import { checkAbort, Control, counterIndex, type CounterName, type SharedState } from "./shared_state.ts";
import { MAC_BYTES, ProtocolError } from "./wire.ts";

declare const self: { postMessage(message: FromSender | FromReceiver): void };

const PEER_CLOSED_EARLY = "the peer closed the connection before the end of the stream";

/** What both directions share: the socket, the shared state, and reading in full. */
class ChannelEnd implements PacketInput {
  readonly channel: SocketChannel;
  readonly region: RegionDescriptor;
  readonly state: SharedState;
  readonly channelId: number;
  #populate: boolean;

  constructor(fd: number, region: RegionDescriptor, state: SharedState, config: ChannelConfig) {
    this.channel = new SocketChannel(fd, config);
    this.region = region;
    this.#populate = region.populate === true;
    this.state = state;
    this.channelId = config.channelId;
  }

  /** Reads exactly the given ranges; the peer ending the stream here is an error. */
  readonly read: ReadRanges = (addresses, lengths, endAllowed = false) => {
    let total = 0;
    for (let i = 0; i < lengths.length; i++) total += lengths[i];
    const got = this.channel.readRangesSync(addresses, lengths);
    if (got === 0 && endAllowed) return false;
    if (got < total) throw new ChannelClosedError(PEER_CLOSED_EARLY);
    return true;
  };

  /** Reads a data packet that lists its pages, and the start of the next one; see ReadWirePages. */
  readonly readWirePages: ReadWirePages = (packet) => readWirePagesSync(this.channel, packet, this.#populate);

  /** Reads a run of data packets of QEMU's layout, and the header after them; see ReadWireRun. */
  readonly readWireRun: ReadWireRun = (packet, run) => readWireRunSync(this.channel, packet, run, this.#populate);

  /**
   * Faults a packet's pages of a file region in with one madvise per range, before the
   * copy would fault them one by one. A kernel without MADV_POPULATE_* (< 5.14) just takes
   * the faults. A page that cannot be backed for writing (a sparse file's full file system)
   * fails here: the write that follows would raise SIGBUS.
   */
  readonly populate: Populate = (addresses, lengths, forWrite) => {
    if (!this.#populate) return;
    for (let i = 0; i < addresses.length; i++) {
      const rc = native.zc_prefault(addresses[i], lengths[i], forWrite ? 1 : 0);
      if (rc === -Errno.EINVAL) this.#populate = false;
      else if (rc < 0 && forWrite) throw unbackedPagesError("madvise(MADV_POPULATE_WRITE)", -rc);
    }
  };

  /** Whether a file region's pages are faulted in ahead of each copy (see {@link populate}). */
  get populating(): boolean {
    return this.#populate;
  }

  /** The wire format this channel speaks: sealed when the session is encrypted. */
  static formatOf(config: ChannelConfig): WireFormat {
    return config.qemu ? qemuFormat : config.encryption ? sealedFormat : plainFormat;
  }

  add(name: CounterName, amount: number): void {
    this.state.counters[counterIndex(this.channelId, name)] += amount;
  }

  /** Done with the socket; the main thread, which owns the fd, closes it. */
  relinquish(): void {
    this.channel.relinquish();
  }
}

class SendEnd extends ChannelEnd {
  readonly #codec: SendCodec;
  readonly #config: SenderConfig;
  /** The zero-page scan of each block (one: the region; QEMU's format: every RAM block), and the round's. */
  readonly #scans: PageScan[];
  #scan: PageScan;
  /** All-zero pages waiting to go to the main thread (codec.zeroPagesElsewhere), as offsets in the round's block. */
  readonly #zeroPages = new Float64Array(ZERO_PAGES_PER_MESSAGE);
  #zeroPageCount = 0;
  readonly #reply: Uint8Array;
  /** One packet's offsets: all of them, then split into data and zero pages. */
  readonly #offsets: Float64Array;
  readonly #normal: Float64Array;
  readonly #zero: Float64Array;
  /** Head and payload of a packet sent in one sendmsg (reused). */
  readonly #whole = new Ranges();
  /** Where a format that seals packets puts them (codec.stagingBytes > 0): a ring of slots. */
  readonly #staging: StagingRing;
  /**
   * Whether pages still go with MSG_ZEROCOPY; "judging" until enough completions arrived to
   * tell whether the kernel copies them all (SenderOptions.zerocopyFallback).
   */
  #zerocopyPages: "judging" | "yes" | "no";
  /** Completions to judge on (zerocopyFallbackSends: 32 MiB of packets). */
  readonly #fallbackSends: number;

  constructor(fd: number, region: RegionDescriptor, state: SharedState, config: SenderConfig) {
    super(fd, region, state, config);
    if (config.zerocopy && !this.channel.zerocopy) {
      this.channel.relinquish();
      throw new ZeroCopyUnsupportedError("zero-copy requested but the kernel refused SO_ZEROCOPY on this socket");
    }
    this.#config = config;
    this.#codec = ChannelEnd.formatOf(config).sender(config, region, this.populate);
    const slots = config.zerocopy ? zerocopyStagingSlots(this.#codec.stagingBytes) : 1;
    this.#staging = new StagingRing(this.#codec.stagingBytes, slots);
    this.#fallbackSends = zerocopyFallbackSends(config.pagesPerPacket * config.pageSize);
    const blocks = config.qemu?.ramBlocks.map((block) => block.region) ?? [region];
    this.#scans = blocks.map((block) => new PageScan(block, config.pageSize));
    this.#scan = this.#scans[0];
    this.#reply = new Uint8Array(this.#codec.replyBytes);
    this.#offsets = new Float64Array(config.pagesPerPacket);
    this.#normal = new Float64Array(config.pagesPerPacket);
    this.#zero = new Float64Array(config.pagesPerPacket);
    this.#zerocopyPages = !config.zerocopy ? "no" : config.zerocopyFallback ? "judging" : "yes";
  }

  /** Sends packets until the round's cursor runs out, then SYNC, flush, and the ack. */
  round(pages: Uint32Array | null, pageCount: number, syncNumber: number, block?: number): boolean {
    if (block !== undefined) {
      this.#codec.selectBlock?.(block);
      this.#scan = this.#scans[block] ?? this.#scan;
    }
    // A round too small to give every channel a full packet is split evenly among them, so
    // that all channels carry it (every Worker computes the same split).
    const perPacket = Math.max(1, Math.min(this.#config.pagesPerPacket, Math.ceil(pageCount / this.state.channels)));
    // Copying sends of a format with a native run: the round in native calls (the last
    // round's flush left no zero-copy send outstanding; a channel whose zero-copy falls back
    // during the round switches once its sends completed: #sendPackets).
    const run = this.#zerocopyPages === "no" ? this.#codec.sendRun?.() : undefined;
    if (run) this.#sendRun(run, pages, pageCount, perPacket);
    else this.#sendPackets(pages, pageCount, perPacket);
    // Before SYNC: the main thread sends them before the end of section that follows it.
    this.#postZeroPages();
    this.#send(this.#codec.control("sync", syncNumber));
    const allCopied = this.channel.flushZerocopySync() === 1;
    this.#codec.parseSyncAck(this.#readReply(), syncNumber);
    this.#countZerocopy();
    this.add("syncs", 1);
    if (allCopied) this.add("zerocopyFlushesAllCopied", 1);
    return allCopied;
  }

  /**
   * The round's packets one by one, claimed from the shared cursor until it runs out; if
   * zero-copy falls back meanwhile, the rest of them in a native run ({@link #sendRun}).
   */
  #sendPackets(pages: Uint32Array | null, pageCount: number, perPacket: number): void {
    const { pageSize, zeroPages } = this.#config;
    const zeroElsewhere = this.#codec.zeroPagesElsewhere === true;
    const packets = Math.ceil(pageCount / perPacket);
    for (;;) {
      checkAbort(this.state);
      const packet = Atomics.add(this.state.control, Control.CURSOR, 1);
      if (packet >= packets) return;
      const first = packet * perPacket;
      const count = Math.min(perPacket, pageCount - first);
      packetOffsets(pages, first, count, pageSize, this.#offsets);
      const zeroCount = zeroPages ? this.#scan.splitZero(this.#offsets, count, this.#normal, this.#zero) : 0;
      const normal = zeroPages ? this.#normal : this.#offsets;
      this.add("pagesNormal", count - zeroCount);
      this.add("pagesZero", zeroCount);
      if (zeroElsewhere) {
        this.#queueZeroPages(zeroCount);
        if (count === zeroCount) continue; // nothing for a packet
      }
      const slot = this.#staging.next(this.channel, this.#zerocopyPages !== "no");
      this.#send(this.#codec.data(normal, count - zeroCount, this.#zero, zeroElsewhere ? 0 : zeroCount, slot));
      this.#staging.sent(this.channel);
      this.add("packets", 1);
      if (this.#zerocopyPages === "no" && this.#codec.sendRun) {
        // Zero-copy just fell back: once the kernel is done with its sends, nothing is left on
        // the error queue, and the rest of the round goes in native calls.
        this.channel.awaitZerocopySendsSync(this.channel.stats.zerocopySends);
        return this.#sendRun(this.#codec.sendRun(), pages, pageCount, perPacket);
      }
    }
  }

  /**
   * The round's packets in native calls (wire_writes.ts): what {@link #sendPackets} would
   * send with copying sends, the same bytes, claimed from the same cursor; a call returns
   * early to post a full batch of zero pages or for an abort.
   */
  #sendRun(run: SendRun, pages: Uint32Array | null, pageCount: number, perPacket: number): void {
    const { pageSize, zeroPages } = this.#config;
    const zeroMode = !zeroPages
      ? RunZeroPages.notScanned
      : this.#codec.zeroPagesElsewhere
      ? RunZeroPages.toCaller
      : RunZeroPages.inPacket;
    const { control } = this.state;
    const round = { memory: this.#scan.region, pageSize, pages, pageCount, perPacket, control, ...RUN_CONTROL };
    for (;;) {
      const sent = sendWireRunSync(
        this.channel,
        round,
        run,
        zeroMode,
        this.#zeroPages,
        this.#zeroPageCount,
        this.populating,
      );
      this.#zeroPageCount = sent.zeroCount;
      this.add("packets", sent.packets);
      this.add("pagesNormal", sent.normalPages);
      this.add("pagesZero", sent.zeroPages);
      this.add("bytes", sent.payloadBytes);
      if (sent.done) return;
      checkAbort(this.state);
      this.#postZeroPages();
    }
  }

  /** Adds the packet's first `count` zero pages (this.#zero) to the batch, in bulk; posts full batches. */
  #queueZeroPages(count: number): void {
    for (let from = 0; from < count;) {
      const n = Math.min(count - from, this.#zeroPages.length - this.#zeroPageCount);
      this.#zeroPages.set(this.#zero.subarray(from, from + n), this.#zeroPageCount);
      this.#zeroPageCount += n;
      from += n;
      if (this.#zeroPageCount === this.#zeroPages.length) this.#postZeroPages();
    }
  }

  #postZeroPages(): void {
    if (this.#zeroPageCount === 0) return;
    self.postMessage({ kind: "zeroPages", offsets: this.#zeroPages.slice(0, this.#zeroPageCount) });
    this.#zeroPageCount = 0;
  }

  /** Ends the stream. */
  end(): void {
    this.#send(this.#codec.control("end", 0));
  }

  /**
   * Reads the receiver's result: its checksum and byte count, and the MAC that follows them
   * (the main thread checks it: the end of every format is authenticated).
   */
  readResult(): { checksum: Uint8Array; bytes: number; mac: Uint8Array } {
    const result = new Uint8Array(this.#codec.resultBytes + MAC_BYTES);
    if (this.channel.readFullSync(result) < result.length) {
      throw new ChannelClosedError("the receiver closed the connection before its result");
    }
    return { ...this.#codec.parseResult(result), mac: result.slice(this.#codec.resultBytes) };
  }

  /** Channel 0 tells the receiver whether the checksums matched, with its MAC; the others just close. */
  verdict(matched: boolean, mac: Uint8Array): void {
    if (this.#config.channelId !== 0) return;
    this.#send(this.#codec.control("verdict", matched ? 1 : 0));
    this.channel.writevSync([mac]);
  }

  #send(out: Outgoing): void {
    checkAbort(this.state);
    const { addresses, lengths } = out.payload;
    if (this.#zerocopyPages !== "no" && out.payloadBytes > 0) {
      // As QEMU: the small head is copied, only page data goes zero-copy.
      this.channel.writeRangesSync([out.headAddress], [out.headLength], false);
      this.channel.writeRangesSync(addresses, lengths, true);
      if (this.#zerocopyPages === "judging") this.#judgeZerocopy();
    } else {
      // One sendmsg for head and pages, from this loop's own lists: the packet is the codec's.
      const all = this.#whole;
      all.clear();
      all.push(out.headAddress, out.headLength);
      for (let i = 0; i < addresses.length; i++) all.push(addresses[i], lengths[i]);
      this.channel.writeRangesSync(all.addresses, all.lengths, false);
    }
    this.add("bytes", out.payloadBytes);
  }

  /**
   * Once enough completions arrived (the sends drain them as the socket fills): if the
   * kernel copied every one, MSG_ZEROCOPY buys nothing on this path, so stop using it.
   */
  #judgeZerocopy(): void {
    const { zerocopyCompletions, zerocopyCopied } = this.channel.stats;
    if (zerocopyCompletions < this.#fallbackSends) return;
    this.#zerocopyPages = zerocopyCopied === zerocopyCompletions ? "no" : "yes";
    if (this.#zerocopyPages === "no") this.add("zerocopyFallbacks", 1);
  }

  /** The receiver's reply to a SYNC (none in a format whose receiver answers nothing: QEMU's). */
  #readReply(): Uint8Array {
    if (this.#reply.length === 0) return this.#reply;
    if (this.channel.readFullSync(this.#reply) < this.#reply.length) {
      throw new ChannelClosedError("the receiver closed the connection");
    }
    return this.#reply;
  }

  #countZerocopy(): void {
    const stats = this.channel.stats;
    const { counters } = this.state;
    counters[counterIndex(this.channelId, "zerocopySends")] = stats.zerocopySends;
    counters[counterIndex(this.channelId, "zerocopyCompletions")] = stats.zerocopyCompletions;
    counters[counterIndex(this.channelId, "zerocopyCopied")] = stats.zerocopyCopied;
  }
}

class ReceiveEnd extends ChannelEnd {
  readonly #codec: ReceiveCodec;
  readonly #config: ChannelConfig;

  constructor(fd: number, region: RegionDescriptor, state: SharedState, config: ChannelConfig) {
    super(fd, region, state, config);
    this.#config = config;
    this.#codec = ChannelEnd.formatOf(config).receiver(config, region, this.populate);
    // This thread only reads and answers: wait for data inside recvmsg, as QEMU does.
    this.channel.blockInReceive();
  }

  /** Receives until END. Posts "sync" at each barrier. */
  run(): void {
    for (;;) {
      checkAbort(this.state);
      const packet = this.#codec.next(this);
      if (packet.kind === "data") {
        this.add("bytes", packet.payloadBytes);
        this.add("packets", packet.packets);
        this.add("pagesNormal", packet.normalPages);
        this.add("pagesZero", packet.zeroPages);
      } else if (packet.kind === "sync") {
        if (packet.payloadBytes) {
          this.add("bytes", packet.payloadBytes);
          this.add("packets", 1);
          this.add("pagesNormal", packet.normalPages ?? 0);
        }
        this.#sync(packet.syncNumber);
      } else if (packet.kind === "end") {
        return;
      } else {
        throw new ProtocolError("packet.type", "VERDICT before END");
      }
    }
  }

  /** Sends RESULT followed by its MAC (made by the main thread). */
  sendResult(checksum: Uint8Array, bytes: number, mac: Uint8Array): void {
    this.channel.writevSync([this.#codec.result(checksum, bytes), mac]);
  }

  /** Reads the sender's verdict (whether its checksum matched ours) and the MAC that follows it. */
  readVerdict(): { matched: boolean; mac: Uint8Array } {
    const packet = this.#codec.next(this);
    if (packet.kind !== "verdict") throw new ProtocolError("packet.type", `expected VERDICT, got ${packet.kind}`);
    const mac = new Uint8Array(MAC_BYTES);
    if (this.channel.readFullSync(mac) < MAC_BYTES) {
      throw new ChannelClosedError("the sender closed the connection before its verdict's MAC");
    }
    return { matched: packet.matched, mac };
  }

  #sync(syncNumber: number): void {
    const { control } = this.state;
    const generation = Atomics.load(control, Control.BARRIER);
    // An abort raises the flag before it bumps the barrier: if the bump came before our
    // load, the flag is up now; if after, the wait below returns at once.
    checkAbort(this.state);
    self.postMessage({ kind: "sync", syncNumber });
    // -1 means no limit; Atomics.wait would take a negative timeout as 0.
    const timeoutMs = this.#config.ioTimeoutMs;
    const waited = Atomics.wait(control, Control.BARRIER, generation, timeoutMs < 0 ? Infinity : timeoutMs);
    checkAbort(this.state);
    if (waited === "timed-out") {
      throw new TimeoutError("sync barrier", timeoutMs, "another channel never reached the sync");
    }
    const ack = this.#codec.syncAck(syncNumber);
    if (ack.length > 0) this.channel.writevSync([ack]);
    this.add("syncs", 1);
  }
}

/**
 * Staging per channel of a format that seals packets, with zero-copy: the kernel may still
 * read a slot after sendmsg returns, so the sender fills the next slots meanwhile and
 * reuses one only after its completion. Up to 8 slots within 4 MiB per channel: 8 of a 512
 * KiB packet, 2 of a 2 MiB one; never fewer than 2 (8 MiB at the default 4 MiB packets).
 */
const ZEROCOPY_STAGING_BYTES = 4 * 2 ** 20;
const ZEROCOPY_STAGING_SLOTS = 8;

function zerocopyStagingSlots(slotBytes: number): number {
  if (slotBytes === 0) return 1;
  return Math.min(ZEROCOPY_STAGING_SLOTS, Math.max(2, Math.floor(ZEROCOPY_STAGING_BYTES / slotBytes)));
}

/** Where a native send run finds the round's packet cursor and the abort flag in the shared control words. */
const RUN_CONTROL = { cursorAt: Control.CURSOR, abortAt: Control.ABORT } as const;

/** All-zero pages per "zeroPages" message (codec.zeroPagesElsewhere): 128 KiB of offsets. */
const ZERO_PAGES_PER_MESSAGE = 16384;

/**
 * The send side's staging: slots handed out in turn, each reused only once the zero-copy
 * sends made from it have completed (without zero-copy, sendmsg has copied it on return).
 */
class StagingRing {
  readonly #bytes: Uint8Array;
  readonly #address: number;
  readonly #slotBytes: number;
  /** Per slot: the channel's zero-copy send count after the last send from it. */
  readonly #marks: Float64Array;
  #current = -1;

  constructor(slotBytes: number, slots: number) {
    this.#slotBytes = slotBytes;
    this.#bytes = new Uint8Array(slotBytes * slots);
    this.#address = slotBytes > 0 ? addressOf(this.#bytes) : 0;
    this.#marks = new Float64Array(slots);
  }

  /**
   * The next slot's address, once the kernel is done with it (0 for a format without
   * staging). `advance` false (the packet goes with a copying send): the current slot again,
   * still warm in the cache.
   */
  next(channel: SocketChannel, advance: boolean): number {
    if (this.#slotBytes === 0) return 0;
    if (advance || this.#current < 0) this.#current = (this.#current + 1) % this.#marks.length;
    const mark = this.#marks[this.#current];
    if (mark > 0) channel.awaitZerocopySendsSync(mark);
    return this.#address + this.#current * this.#slotBytes;
  }

  /** The current slot was just sent from. */
  sent(channel: SocketChannel): void {
    if (this.#slotBytes > 0) this.#marks[this.#current] = channel.stats.zerocopySends;
  }
}

let sending: SendEnd | undefined;
let receiving: ReceiveEnd | undefined;

function handle(message: ToSender | ToReceiver): void {
  switch (message.kind) {
    case "start":
      if (message.role === "send") {
        sending = new SendEnd(message.fd, message.region, message.state, message.config);
      } else {
        receiving = new ReceiveEnd(message.fd, message.region, message.state, message.config);
        receiving.run();
        self.postMessage({ kind: "ended" });
      }
      return;
    case "round": {
      const allCopied = sending!.round(message.pages, message.pageCount, message.syncNumber, message.block);
      self.postMessage({ kind: "synced", syncNumber: message.syncNumber, allCopied });
      return;
    }
    case "checksum": {
      const end = (sending ?? receiving)!;
      self.postMessage({
        kind: "hashes",
        blocks: message.blocks,
        hashes: hashBlocks(end.region, message.blocks, message.key, message.algorithm, end.state),
      });
      return;
    }
    case "end":
      sending!.end();
      self.postMessage({ kind: "endSent" });
      return;
    case "readResult":
      self.postMessage({ kind: "result", ...sending!.readResult() });
      return;
    case "verdict":
      sending!.verdict(message.matched, message.mac);
      sending!.relinquish();
      self.postMessage({ kind: "done" });
      return;
    case "result": {
      receiving!.sendResult(message.checksum, message.bytes, message.mac);
      const verdict = message.awaitVerdict ? receiving!.readVerdict() : undefined;
      receiving!.relinquish();
      self.postMessage({ kind: "done", verdict });
      return;
    }
  }
}

serveChannelWorker(handle, () => (sending ?? receiving)?.relinquish());
