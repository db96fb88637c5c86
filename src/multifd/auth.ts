/**
 * Mutual authentication of a channel (protocol version 2, docs/PROTOCOL.md "Handshake").
 * Both sides contribute a fresh nonce; each proves it knows the shared secret with a MAC
 * over the whole transcript: both nonces and every INIT field (session, channel, channel
 * count, region size, packet size, flags), under a label per direction, so that nothing can
 * be replayed from another session or channel, or reflected back. The sender sends no region
 * byte before the receiver's proof checked out.
 *
 * Keys: the secret is never a MAC key itself. HKDF-SHA-256 (salt {@link KEY_SALT}) derives
 * the handshake key from it, and, per session, from it and channel 0's transcript, the keys
 * of the session's end: the region checksum's key and the key that authenticates the
 * checksum exchange (RESULT, VERDICT), so that an attacker on the path can neither make both
 * sides agree on altered pages nor turn a mismatch into "verified"; and for encrypted
 * channels, per channel from its transcript, a traffic key per direction. WebCrypto, so the same
 * code runs in Deno and Bun; comparisons are WebCrypto's `verify` (constant time).
 * @module
 */
import { concatBytes } from "../../util/bytes.ts";
import { InvalidArgumentError } from "../errors.ts";
import { CHECKSUM_BYTES, CHECKSUM_KEY_BYTES } from "./checksum.ts";
import { NONCE_BYTES } from "./wire.ts";
import { TRAFFIC_KEY_BYTES } from "./aead.ts";
import type { ChannelEncryption } from "./codec.ts";

/** Shortest accepted {@link Secret}, in bytes: shorter ones are refused with InvalidArgumentError. */
export const MIN_SECRET_BYTES = 16;

/** A shared secret: raw bytes, or a string (its UTF-8 bytes). At least 16 bytes. */
export type Secret = Uint8Array | string;

/** HKDF salt of every key this protocol version derives from the secret. */
export const KEY_SALT = "zerocopy-multifd v2";

/** The keys a session's handshakes use, derived once from the secret. */
export interface SecretKeys {
  /** HMAC-SHA-256 key of the handshake MACs: HKDF(secret, KEY_SALT, "handshake"). */
  readonly handshake: CryptoKey;
  /** The secret as HKDF input, for the keys of each session ({@link sessionKeys}). */
  readonly base: CryptoKey;
}

/** The keys of one session's end, the same on both sides (both know channel 0's transcript). */
export interface SessionKeys {
  /** The region checksum's key (checksum.ts): HKDF(secret, KEY_SALT, "region checksum" ‖ transcript 0). */
  readonly checksum: Uint8Array;
  /** HMAC-SHA-256 key of RESULT and VERDICT: HKDF(secret, KEY_SALT, "end of stream" ‖ transcript 0). */
  readonly end: CryptoKey;
}

/** What one channel's handshake authenticates: both nonces and the INIT fields. */
export interface Transcript {
  /** The receiver's HELLO nonce. */
  receiverNonce: Uint8Array;
  /** The sender's nonce, sent with its INIT. */
  senderNonce: Uint8Array;
  /** The INIT fields as sent (INIT_FIELDS_BYTES). */
  init: Uint8Array;
}

const encoder = new TextEncoder();
const INIT_LABEL = encoder.encode("zerocopy-multifd v2 INIT, sender to receiver");
const INIT_ACK_LABEL = encoder.encode("zerocopy-multifd v2 INIT_ACK, receiver to sender");

export async function importSecret(secret: Secret): Promise<SecretKeys> {
  const bytes = typeof secret === "string" ? encoder.encode(secret) : secret;
  if (!(bytes instanceof Uint8Array) || bytes.length < MIN_SECRET_BYTES) {
    throw new InvalidArgumentError(`secret must be a string or Uint8Array of at least ${MIN_SECRET_BYTES} bytes`);
  }
  const base = await crypto.subtle.importKey("raw", bytes.slice(), "HKDF", false, ["deriveBits"]);
  const handshake = await derive(base, encoder.encode("handshake"), 32);
  return { base, handshake: await hmacKey(handshake) };
}

/** The keys of the session whose channel 0 had transcript `first`. */
export async function sessionKeys(keys: SecretKeys, first: Transcript): Promise<SessionKeys> {
  const info = (label: string) => transcriptBytes(encoder.encode(label), first);
  return {
    checksum: await derive(keys.base, info("region checksum"), CHECKSUM_KEY_BYTES),
    end: await hmacKey(await derive(keys.base, info("end of stream"), 32)),
  };
}

/** One channel's traffic keys, one per direction (aead.ts), the same on both sides. */
export interface TrafficKeys {
  /** Seals what the sender sends: HKDF(secret, KEY_SALT, "traffic, sender to receiver" ‖ transcript). */
  readonly toReceiver: Uint8Array;
  /** Seals what the receiver sends: HKDF(secret, KEY_SALT, "traffic, receiver to sender" ‖ transcript). */
  readonly toSender: Uint8Array;
}

/**
 * The traffic keys of the encrypted channel whose handshake had transcript `t`: fresh per
 * session and channel (both nonces are in the transcript) and per direction.
 */
export async function trafficKeys(keys: SecretKeys, t: Transcript): Promise<TrafficKeys> {
  const info = (label: string) => transcriptBytes(encoder.encode(label), t);
  return {
    toReceiver: await derive(keys.base, info("traffic, sender to receiver"), TRAFFIC_KEY_BYTES),
    toSender: await derive(keys.base, info("traffic, receiver to sender"), TRAFFIC_KEY_BYTES),
  };
}

/**
 * What each channel's Worker needs to seal and open (codec.ts), for the sending or the
 * receiving end of a session with cipher `cipher` (0: not encrypted, nothing to derive).
 */
export function channelEncryption(
  keys: SecretKeys,
  cipher: number,
  transcripts: readonly Transcript[],
  end: "send" | "receive",
): Promise<(ChannelEncryption | undefined)[]> {
  return Promise.all(transcripts.map(async (transcript) => {
    if (cipher === 0) return undefined;
    const { toReceiver, toSender } = await trafficKeys(keys, transcript);
    return end === "send"
      ? { cipher, outboundKey: toReceiver, inboundKey: toSender }
      : { cipher, outboundKey: toSender, inboundKey: toReceiver };
  }));
}

async function derive(base: CryptoKey, info: Uint8Array<ArrayBuffer>, bytes: number): Promise<Uint8Array> {
  const salt = encoder.encode(KEY_SALT);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, base, bytes * 8));
}

function hmacKey(raw: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", raw.slice(), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

export function newNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}

/** label ‖ receiver nonce ‖ sender nonce ‖ INIT fields ‖ extra: what a handshake MAC covers. */
function transcriptBytes(label: Uint8Array, t: Transcript, extra: Uint8Array = new Uint8Array(0)) {
  return concatBytes(label, t.receiverNonce, t.senderNonce, t.init, extra);
}

/** The sender's proof: its MAC over the transcript. */
export async function signInit(keys: SecretKeys, t: Transcript): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", keys.handshake, transcriptBytes(INIT_LABEL, t)));
}

export function verifyInit(keys: SecretKeys, t: Transcript, mac: Uint8Array): Promise<boolean> {
  return crypto.subtle.verify("HMAC", keys.handshake, mac.slice(), transcriptBytes(INIT_LABEL, t));
}

/** The receiver's proof: its MAC over the transcript and the INIT_ACK it sends. */
export async function signInitAck(keys: SecretKeys, t: Transcript, ack: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", keys.handshake, transcriptBytes(INIT_ACK_LABEL, t, ack)));
}

export function verifyInitAck(keys: SecretKeys, t: Transcript, ack: Uint8Array, mac: Uint8Array): Promise<boolean> {
  return crypto.subtle.verify("HMAC", keys.handshake, mac.slice(), transcriptBytes(INIT_ACK_LABEL, t, ack));
}

const RESULT_LABEL = encoder.encode("zerocopy-multifd v2 RESULT, receiver to sender");
const VERDICT_LABEL = encoder.encode("zerocopy-multifd v2 VERDICT, sender to receiver");

/** label ‖ u16 channel ‖ u64 bytes ‖ checksum (CHECKSUM_BYTES) ‖ u8 extra. */
function endBytes(label: Uint8Array, channelId: number, bytes: number, checksum: Uint8Array, extra: number) {
  const out = new Uint8Array(label.length + 2 + 8 + CHECKSUM_BYTES + 1);
  const view = new DataView(out.buffer);
  out.set(label);
  view.setUint16(label.length, channelId);
  view.setBigUint64(label.length + 2, BigInt(bytes));
  out.set(checksum, label.length + 10);
  out[out.length - 1] = extra;
  return out;
}

/** The receiver's MAC on channel `channelId`'s RESULT: its checksum and the payload bytes it received. */
export async function signResult(keys: SessionKeys, channelId: number, bytes: number, checksum: Uint8Array) {
  return new Uint8Array(
    await crypto.subtle.sign("HMAC", keys.end, endBytes(RESULT_LABEL, channelId, bytes, checksum, 0)),
  );
}

export function verifyResult(
  keys: SessionKeys,
  channelId: number,
  bytes: number,
  checksum: Uint8Array,
  mac: Uint8Array,
) {
  return crypto.subtle.verify("HMAC", keys.end, mac.slice(), endBytes(RESULT_LABEL, channelId, bytes, checksum, 0));
}

/** The sender's MAC on its VERDICT (channel 0), bound to the receiver's checksum and byte count it judged. */
export async function signVerdict(keys: SessionKeys, matched: boolean, bytes: number, checksum: Uint8Array) {
  return new Uint8Array(
    await crypto.subtle.sign("HMAC", keys.end, endBytes(VERDICT_LABEL, 0, bytes, checksum, matched ? 1 : 0)),
  );
}

export function verifyVerdict(
  keys: SessionKeys,
  matched: boolean,
  bytes: number,
  checksum: Uint8Array,
  mac: Uint8Array,
): Promise<boolean> {
  return crypto.subtle.verify(
    "HMAC",
    keys.end,
    mac.slice(),
    endBytes(VERDICT_LABEL, 0, bytes, checksum, matched ? 1 : 0),
  );
}
