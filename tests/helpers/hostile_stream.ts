/**
 * Hand-built multifd packet streams for hostile tests, and an independent model of what a
 * receiver must do with them.
 *
 * The encoder writes every field itself (so a test can put any value anywhere); the model
 * restates the rules of docs/PROTOCOL.md ("Validation of every packet") without calling
 * the parsers under test, and predicts, for a byte stream sent on a one-channel session:
 * whether the receive resolves or rejects, and exactly which bytes of the region change.
 */
import type { Rng } from "./rng.ts";

const PAGE = 4096;
const HEADER = 32;
const MAGIC = 0x5a434d50; // "ZCMP", restated on purpose
export const DATA = 1, SYNC = 2, END = 3, VERDICT = 4;

export interface PacketFields {
  type: number;
  number: number;
  normal?: number;
  zero?: number;
  payloadBytes?: number;
  argument?: number;
  flags?: number;
  reserved?: number;
  magic?: number;
}

export function header(f: PacketFields): Uint8Array {
  const bytes = new Uint8Array(HEADER);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, f.magic ?? MAGIC);
  view.setUint8(4, f.type);
  view.setUint8(5, f.flags ?? 0);
  view.setUint16(6, f.reserved ?? 0);
  setU64(view, 8, f.number);
  view.setUint32(16, f.normal ?? 0);
  view.setUint32(20, f.zero ?? 0);
  view.setUint32(24, f.payloadBytes ?? 0);
  view.setUint32(28, f.argument ?? 0);
  return bytes;
}

/** Length of the page at `offset` of a region of `size` bytes (the last may be short). */
export function pageLength(offset: number, size: number): number {
  return Math.max(0, Math.min(PAGE, size - offset));
}

export interface DataPacket {
  number: number;
  /** Byte offsets of pages whose data follows, in list order. */
  normal: number[];
  /** Byte offsets of all-zero pages. */
  zero?: number[];
  regionSize: number;
  /** Page contents, one per normal offset (default: a pattern from the offset). */
  pages?: Uint8Array[];
  /** Overrides of header fields (to break the packet). */
  override?: Partial<PacketFields>;
}

/** A complete DATA packet: header, offset list, page data. */
export function dataPacket(p: DataPacket): Uint8Array {
  const zero = p.zero ?? [];
  const pages = p.pages ?? p.normal.map((offset) => pageFill(offset, pageLength(offset, p.regionSize) || PAGE));
  const payload = pages.reduce((sum, page) => sum + page.length, 0);
  const head = header({
    type: DATA,
    number: p.number,
    normal: p.normal.length,
    zero: zero.length,
    payloadBytes: payload,
    ...p.override,
  });
  const offsets = new Uint8Array((p.normal.length + zero.length) * 8);
  const view = new DataView(offsets.buffer);
  [...p.normal, ...zero].forEach((offset, i) => setU64(view, i * 8, offset));
  return concat([head, offsets, ...pages]);
}

/** Recognisable page content: every byte derived from the offset and a salt. */
export function pageFill(offset: number, length: number, salt = 0xa5): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (offset / PAGE + i * 7 + salt) & 0xff;
  return bytes;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) out.set(part, at), (at += part.length);
  return out;
}

function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 0x1_0000_0000) >>> 0);
  view.setUint32(at + 4, value >>> 0);
}

/** Where each part of a generated stream lies (to aim mutations at headers or offsets). */
export interface Span {
  at: number;
  length: number;
  kind: "header" | "offsets" | "payload";
}

export interface GeneratedStream {
  bytes: Uint8Array;
  spans: Span[];
  /** Packets in the stream (END included): the VERDICT's packet number. */
  packets: number;
}

/**
 * A valid one-channel stream: 1..4 DATA packets of random pages (some zero pages), maybe a
 * SYNC 0 between them, then END.
 */
export function generateStream(rng: Rng, regionSize: number, pagesPerPacket: number): GeneratedStream {
  const pageCount = Math.ceil(regionSize / PAGE);
  const parts: Uint8Array[] = [];
  const spans: Span[] = [];
  let at = 0;
  let number = 0;
  const push = (bytes: Uint8Array, kind: Span["kind"]) => {
    parts.push(bytes);
    spans.push({ at, length: bytes.length, kind });
    at += bytes.length;
  };
  const dataCount = 1 + rng.int(4);
  const syncAfter = rng.chance32(0.3) ? rng.int(dataCount) : -1;
  for (let k = 0; k < dataCount; k++) {
    const count = 1 + rng.int(pagesPerPacket);
    const chosen = new Set<number>();
    while (chosen.size < Math.min(count, pageCount)) chosen.add(rng.int(pageCount));
    const normal: number[] = [];
    const zero: number[] = [];
    for (const page of [...chosen].sort((a, b) => a - b)) (rng.chance32(0.25) ? zero : normal).push(page * PAGE);
    const pages = normal.map((offset) => rng.bytes(pageLength(offset, regionSize)));
    const payload = pages.reduce((sum, p) => sum + p.length, 0);
    push(
      header({ type: DATA, number: number++, normal: normal.length, zero: zero.length, payloadBytes: payload }),
      "header",
    );
    const offsets = new Uint8Array((normal.length + zero.length) * 8);
    const view = new DataView(offsets.buffer);
    [...normal, ...zero].forEach((offset, i) => setU64(view, i * 8, offset));
    push(offsets, "offsets");
    if (payload > 0) push(concat(pages), "payload");
    if (k === syncAfter) push(header({ type: SYNC, number: number++, argument: 0 }), "header");
  }
  push(header({ type: END, number: number++ }), "header");
  return { bytes: concat(parts), spans, packets: number };
}

export interface Mutation {
  at: number;
  kind: Span["kind"] | "truncate";
  from?: number;
  to?: number;
}

/**
 * Changes 1..3 bytes, mostly in headers and offset lists, a few in page data; or (one time
 * in six) cuts the stream short at a random point, maybe after changing a byte.
 */
export function mutate(rng: Rng, stream: GeneratedStream): { bytes: Uint8Array; mutations: Mutation[] } {
  let bytes = stream.bytes.slice();
  const mutations: Mutation[] = [];
  const truncate = rng.chance32(1 / 6);
  const count = truncate ? rng.int(2) : 1 + rng.int(3);
  const ofKind = (kind: Span["kind"]) => stream.spans.filter((s) => s.kind === kind);
  for (let i = 0; i < count; i++) {
    const roll = rng.int(100);
    const kind: Span["kind"] = roll < 55 ? "header" : roll < 85 ? "offsets" : "payload";
    const candidates = ofKind(kind).length > 0 ? ofKind(kind) : ofKind("header");
    const span = candidates[rng.int(candidates.length)];
    let at = span.at + rng.int(span.length);
    if (span.kind === "header" && rng.chance32(0.6)) {
      // Aim at the fields that steer the receiver: type, number, counts, payload, argument.
      const fields = [4, 5, 15, 19, 23, 26, 27, 31, 14];
      at = span.at + fields[rng.int(fields.length)];
    }
    const from = bytes[at];
    const style = rng.int(4);
    let to = style === 0 ? from ^ (1 << rng.int(8)) : style === 1 ? rng.int(256) : style === 2 ? from + 1 : from - 1;
    to &= 0xff;
    if (to === from) to = from ^ 1;
    bytes[at] = to;
    mutations.push({ at, from, to, kind: span.kind });
  }
  if (truncate) {
    // Half the cuts inside a header or an offset list (the receiver then waits in the
    // middle of one), half anywhere (mostly in page data: a packet cut short).
    const structural = stream.spans.filter((s) => s.kind !== "payload");
    const span = structural[rng.int(structural.length)];
    const at = rng.chance32(0.5) ? span.at + rng.int(span.length) : rng.int(bytes.length);
    bytes = bytes.slice(0, at);
    mutations.push({ at, kind: "truncate" });
  }
  return { bytes, mutations };
}

export interface ModelWrite {
  offset: number;
  bytes: Uint8Array;
}

export interface Prediction {
  outcome: "resolve" | "reject";
  /** Why it rejects: the rule broken, or "eof" (the stream ends where the receiver needs more). */
  reason?: string;
  /** Writes of accepted packets, in order: they must have landed exactly. */
  writes: ModelWrite[];
  /** Bytes of a packet cut short by the end of the stream: each may or may not have landed. */
  partial: ModelWrite[];
  /** The receiver reaches END and sends RESULT (the client then sends its VERDICT). */
  result: boolean;
  /** SYNC_ACK replies sent before RESULT. */
  syncAcks: number;
  /** The receiver is left waiting for bytes that never come (the client must hang up). */
  starves: boolean;
  verdict?: boolean;
}

/**
 * What a one-channel receiver must do with `stream` (DATA/SYNC/END packets as sent after
 * INIT_ACK) followed — only if it reaches END and sends RESULT — by `verdict`.
 */
export function predict(stream: Uint8Array, verdict: Uint8Array, regionSize: number, pagesPerPacket: number) {
  const p: Prediction = { outcome: "reject", writes: [], partial: [], result: false, syncAcks: 0, starves: false };
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  let pos = 0;
  let expected = 0;
  let syncs = 0;
  const reject = (reason: string, starves = false) => ({ ...p, outcome: "reject" as const, reason, starves });

  for (;;) {
    if (stream.length - pos < HEADER) return reject("eof", true);
    const h = readHeader(view, pos);
    const broken = headerRule(h, expected, pagesPerPacket);
    if (broken) return reject(broken);
    pos += HEADER;
    expected++;
    if (h.type === DATA) {
      const count = h.normal + h.zero;
      if (stream.length - pos < count * 8) return reject("eof", true);
      const offsets: number[] = [];
      for (let i = 0; i < count; i++) {
        const high = view.getUint32(pos + i * 8);
        const low = view.getUint32(pos + i * 8 + 4);
        offsets.push(high >= 0x20_0000 ? Infinity : high * 0x1_0000_0000 + low);
      }
      pos += count * 8;
      const normal = offsets.slice(0, h.normal);
      const zero = offsets.slice(h.normal);
      const broke = offsetRule(normal, zero, h.payloadBytes, regionSize);
      if (broke) return reject(broke);
      const available = Math.min(h.payloadBytes, stream.length - pos);
      let taken = 0;
      const writes: ModelWrite[] = [];
      for (const offset of normal) {
        const length = pageLength(offset, regionSize);
        const n = Math.min(length, available - taken);
        if (n > 0) writes.push({ offset, bytes: stream.slice(pos + taken, pos + taken + n) });
        taken += length;
      }
      if (available < h.payloadBytes) {
        p.partial.push(...writes);
        return reject("eof", true);
      }
      p.writes.push(...writes);
      for (const offset of zero) p.writes.push({ offset, bytes: new Uint8Array(pageLength(offset, regionSize)) });
      pos += h.payloadBytes;
    } else if (h.type === SYNC) {
      if (h.argument !== syncs) return reject("packet.argument");
      syncs++;
      p.syncAcks++;
    } else if (h.type === END) {
      p.result = true;
      // Channel 0 reads one more header: leftover stream bytes, then the client's VERDICT.
      const next = concat([stream.subarray(pos), verdict]);
      if (next.length < HEADER) return reject("eof", true);
      const v = readHeader(new DataView(next.buffer), 0);
      const vBroken = headerRule(v, expected, pagesPerPacket);
      if (vBroken) return reject(vBroken);
      if (v.type !== VERDICT) return reject("packet.type");
      return { ...p, outcome: "resolve" as const, verdict: v.argument === 1 };
    } else {
      return reject("packet.type"); // VERDICT before END
    }
  }
}

interface Header {
  magic: number;
  type: number;
  flags: number;
  reserved: number;
  numberHigh: number;
  number: number;
  normal: number;
  zero: number;
  payloadBytes: number;
  argument: number;
}

function readHeader(view: DataView, at: number): Header {
  const numberHigh = view.getUint32(at + 8);
  return {
    magic: view.getUint32(at),
    type: view.getUint8(at + 4),
    flags: view.getUint8(at + 5),
    reserved: view.getUint16(at + 6),
    numberHigh,
    number: numberHigh * 0x1_0000_0000 + view.getUint32(at + 12),
    normal: view.getUint32(at + 16),
    zero: view.getUint32(at + 20),
    payloadBytes: view.getUint32(at + 24),
    argument: view.getUint32(at + 28),
  };
}

/** The header rules of docs/PROTOCOL.md; returns the broken field, or undefined. */
function headerRule(h: Header, expected: number, pagesPerPacket: number): string | undefined {
  if (h.magic !== MAGIC) return "packet.magic";
  if (h.type < DATA || h.type > VERDICT) return "packet.type";
  if (h.flags !== 0) return "packet.flags";
  if (h.reserved !== 0) return "packet.reserved";
  if (h.numberHigh >= 0x20_0000 || h.number !== expected) return "packet.number";
  const pages = h.normal + h.zero;
  if (h.type === DATA) {
    if (pages < 1 || pages > pagesPerPacket) return "packet.pages";
    if (h.payloadBytes > h.normal * PAGE) return "packet.payloadBytes";
    if (h.argument !== 0) return "packet.argument";
  } else {
    if (pages !== 0 || h.payloadBytes !== 0) return "packet.pages";
    if (h.type === VERDICT && h.argument > 1) return "packet.argument";
    if (h.type === END && h.argument !== 0) return "packet.argument";
  }
  return undefined;
}

/** The offset-list rules; returns the broken field, or undefined. */
function offsetRule(normal: number[], zero: number[], payloadBytes: number, size: number): string | undefined {
  for (const list of [normal, zero]) {
    for (let i = 0; i < list.length; i++) {
      const offset = list[i];
      if (!Number.isFinite(offset) || offset % PAGE !== 0 || offset >= size) return "packet.offset";
      if (i > 0 && offset <= list[i - 1]) return "packet.offset";
    }
  }
  const payload = normal.reduce((sum, offset) => sum + pageLength(offset, size), 0);
  if (payload !== payloadBytes) return "packet.payloadBytes";
  const zeroSet = new Set(zero);
  if (normal.some((offset) => zeroSet.has(offset))) return "packet.offset";
  return undefined;
}
