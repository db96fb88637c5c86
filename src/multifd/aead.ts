/**
 * The AEAD layer of encrypted channels (docs/PROTOCOL.md "Encrypted channels"): one
 * direction of a channel seals or opens a sequence of messages, message n under nonce n
 * (never reused: a counter), with a key that changes every {@link MESSAGES_PER_KEY}
 * messages. The ciphers are std.crypto's, run by the native library (zig/aead.zig) inside
 * the channel Workers; this file holds the key schedule and the bookkeeping around them.
 * @module
 */
import { native } from "../../ffi/mod.ts";
import { AuthenticationError, EncryptionLimitError, InvalidArgumentError, ZeroCopyMultifdError } from "../errors.ts";

/**
 * The ciphers of encrypted channels. "aegis-128l" (the default): AEGIS-128L, fastest where
 * the CPU has AES instructions (8.6 GB/s per core here streaming from memory, 15 in cache: `bench/aead.ts`);
 * "aes-256-gcm": the conservative alternative, NIST-standard (0.8–0.9 GB/s per core here).
 */
export type Cipher = "aegis-128l" | "aes-256-gcm";

/** The default {@link Cipher}. */
export const DEFAULT_CIPHER: Cipher = "aegis-128l";

/** Cipher ids on the wire (INIT flags) and in zig/aead.zig; 0 is "not encrypted". */
export const CIPHER_IDS: Readonly<Record<Cipher, number>> = { "aegis-128l": 1, "aes-256-gcm": 2 };

export function cipherName(id: number): Cipher | undefined {
  return (Object.keys(CIPHER_IDS) as Cipher[]).find((name) => CIPHER_IDS[name] === id);
}

/** The cipher id a sender's `encrypt` option asks for (0: not encrypted); refuses anything else. */
export function cipherOption(encrypt: boolean | Cipher | undefined): number {
  if (encrypt === undefined || encrypt === false) return 0;
  if (encrypt === true) return CIPHER_IDS[DEFAULT_CIPHER];
  const id = typeof encrypt === "string" && Object.hasOwn(CIPHER_IDS, encrypt) ? CIPHER_IDS[encrypt] : undefined;
  if (id === undefined) {
    const names = Object.keys(CIPHER_IDS).map((name) => `"${name}"`).join(", ");
    throw new InvalidArgumentError(`encrypt must be true, false or one of ${names}, got ${String(encrypt)}`);
  }
  return id;
}

/** Bytes of a traffic key (AEGIS-128L uses the first 16). */
export const TRAFFIC_KEY_BYTES = 32;
/** Bytes of every tag. */
export const TAG_BYTES = 16;
/**
 * Longest message: page data is sealed in pieces of at most 64 KiB (a run of contiguous
 * pages is split), so that one key's messages hold at most 2^24 × 64 KiB = 1 TiB, within
 * AES-GCM's bounds (docs/PROTOCOL.md); the per-message cost is small (bench/aead.ts).
 */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** Messages under one key: the key of messages [e × 2^24, (e + 1) × 2^24) is epoch e's. */
export const MESSAGES_PER_KEY = 2 ** 24;
/**
 * Messages one direction of a channel may seal: past this the channel fails with
 * {@link EncryptionLimitError} rather than reuse a nonce (far beyond any transfer: 2^48
 * messages are 16 EiB of pages).
 */
export const MAX_MESSAGES = 2 ** 48;

const encoder = new TextEncoder();
const EPOCH_SALT = encoder.encode("zerocopy-multifd v2");
const EPOCH_LABEL = "epoch ";

/**
 * Message descriptions for one native call: (address, length) as the iovec layout
 * (little-endian u64 pairs), refilled call after call.
 */
export class MessageList {
  readonly words: Uint32Array;
  count = 0;
  /** Bytes of plaintext listed. */
  bytes = 0;

  constructor(readonly capacity: number) {
    this.words = new Uint32Array(capacity * 4);
  }

  clear(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Lists [address, address + length) as messages of at most MAX_MESSAGE_BYTES (length 0: one empty message). */
  push(address: number, length: number): void {
    for (let at = 0; at === 0 || at < length; at += MAX_MESSAGE_BYTES) {
      const piece = Math.min(MAX_MESSAGE_BYTES, length - at);
      const w = this.count++ * 4;
      if (w >= this.words.length) throw new RangeError("more messages than the list holds");
      const start = address + at;
      this.words[w] = start % 0x1_0000_0000;
      this.words[w + 1] = Math.floor(start / 0x1_0000_0000);
      this.words[w + 2] = piece;
      this.words[w + 3] = 0;
      this.bytes += piece;
    }
  }

  /** Bytes the listed messages take sealed (each followed by its tag). */
  get sealedBytes(): number {
    return this.bytes + this.count * TAG_BYTES;
  }
}

/**
 * One direction of one channel: its traffic key (auth.ts), the epoch keys derived from it
 * (HKDF-SHA-256, salt "zerocopy-multifd v2", info "epoch " ‖ u64 big-endian epoch), and
 * the next message number. Both ends run the same schedule: a call's messages never
 * straddle two epochs (the numbers skip to the next epoch's first instead), so both
 * ends skip alike as long as they make the same calls, which the format defines.
 */
export class SealingDirection {
  readonly #cipher: number;
  readonly #trafficKey: Uint8Array;
  readonly #key = new Uint8Array(TRAFFIC_KEY_BYTES);
  #epoch = -1;
  #next = 0;

  constructor(cipher: number, trafficKey: Uint8Array) {
    if (trafficKey.length !== TRAFFIC_KEY_BYTES) throw new RangeError("a traffic key is 32 bytes");
    this.#cipher = cipher;
    this.#trafficKey = trafficKey.slice();
  }

  /** Number of the next message (for tests: nonce uniqueness). */
  get nextMessage(): number {
    return this.#next;
  }

  /** Seals `messages` back to back (ciphertext, tag) from native address `out`; returns the bytes written. */
  seal(messages: MessageList, out: number): number {
    const first = this.#reserve(messages.count);
    return native.zc_seal(this.#cipher, this.#key, first, messages.words, messages.count, out);
  }

  /**
   * Opens `messages.count` messages laid out at native address `sealed` into the listed
   * destinations. A failure (a forged, altered, dropped or replayed message: its nonce does
   * not match) throws AuthenticationError naming `what`; the failing message's destination
   * is zeroed.
   */
  open(sealed: number, messages: MessageList, what: string): void {
    const first = this.#reserve(messages.count);
    const rc = native.zc_open(this.#cipher, this.#key, first, sealed, messages.words, messages.count);
    if (rc !== 0) {
      throw new AuthenticationError(
        `${what} failed authentication: altered, forged, dropped, reordered or replayed on the way`,
      );
    }
  }

  /** Numbers for `count` messages, all under one epoch key (derived when the epoch changes). */
  #reserve(count: number): number {
    let first = this.#next;
    if (Math.floor(first / MESSAGES_PER_KEY) !== Math.floor((first + count - 1) / MESSAGES_PER_KEY)) {
      first = (Math.floor(first / MESSAGES_PER_KEY) + 1) * MESSAGES_PER_KEY;
    }
    if (first + count > MAX_MESSAGES) {
      throw new EncryptionLimitError(`a channel direction may seal at most ${MAX_MESSAGES} messages`);
    }
    const epoch = Math.floor(first / MESSAGES_PER_KEY);
    if (epoch !== this.#epoch) this.#deriveEpochKey(epoch);
    this.#next = first + count;
    return first;
  }

  #deriveEpochKey(epoch: number): void {
    const info = new Uint8Array(EPOCH_LABEL.length + 8);
    info.set(encoder.encode(EPOCH_LABEL));
    new DataView(info.buffer).setBigUint64(EPOCH_LABEL.length, BigInt(epoch));
    const rc = native.zc_hkdf_sha256(
      this.#trafficKey,
      this.#trafficKey.length,
      EPOCH_SALT,
      EPOCH_SALT.length,
      info,
      info.length,
      this.#key,
      this.#key.length,
    );
    if (rc !== 0) throw new ZeroCopyMultifdError(`HKDF failed (${rc})`);
    this.#epoch = epoch;
  }

  /** For tests: skips to message `number` (e.g. to cross an epoch without sealing 2^24 messages). */
  skipTo(number: number): void {
    if (number < this.#next) throw new RangeError("message numbers only go forward");
    this.#next = number;
  }
}
