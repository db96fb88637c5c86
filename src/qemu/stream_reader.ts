/**
 * Buffered reading of QEMU's main migration channel (a QEMUFile stream: big-endian
 * integers, length-prefixed ids, raw pages) from a {@link ByteSource} (a SocketChannel, or
 * bytes in memory for the fuzz tests), with the stream position for error messages. EOF where bytes are due is a ProtocolError naming `what`.
 * @module
 */
import { ProtocolError } from "../multifd/wire.ts";

const BUFFER_BYTES = 256 * 1024;
const decoder = new TextDecoder();

/** Where the bytes come from: `read` fills some of `buf` and says how much, 0 at EOF (SocketChannel.read). */
export interface ByteSource {
  read(buf: Uint8Array): Promise<number>;
}

export class StreamReader {
  readonly #channel: ByteSource;
  readonly #buffer: Uint8Array;
  readonly #view: DataView;
  #start = 0;
  #end = 0;
  #eof = false;
  /** Bytes consumed before the buffer's start. */
  #base = 0;

  /** `bufferBytes`: how much is read ahead (at least a page; 256 KiB by default). */
  constructor(channel: ByteSource, bufferBytes = BUFFER_BYTES) {
    this.#channel = channel;
    this.#buffer = new Uint8Array(Math.max(bufferBytes, 4096));
    this.#view = new DataView(this.#buffer.buffer);
  }

  /** Stream position of the next byte. */
  get position(): number {
    return this.#base + this.#start;
  }

  /** Makes `n` bytes available (n ≤ the buffer: every caller asks for at most a page); false at EOF with fewer. */
  async #fill(n: number): Promise<boolean> {
    while (this.#end - this.#start < n) {
      if (this.#eof) return false;
      if (this.#start > 0) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#base += this.#start;
        this.#end -= this.#start;
        this.#start = 0;
      }
      const got = await this.#channel.read(this.#buffer.subarray(this.#end));
      if (got === 0) this.#eof = true;
      this.#end += got;
    }
    return true;
  }

  async #need(n: number, what: string): Promise<number> {
    if (!await this.#fill(n)) {
      throw new ProtocolError(what, `the main channel ended at byte ${this.position + this.#end - this.#start}`);
    }
    const at = this.#start;
    this.#start += n;
    return at;
  }

  /**
   * The next u64 if it is in the buffer already, else undefined (nothing consumed): the
   * parser's way through runs of small records (a guest's zero pages are ~9 bytes each)
   * without an await per field.
   */
  bufferedU64(): bigint | undefined {
    if (this.#end - this.#start < 8) return undefined;
    const value = this.#view.getBigUint64(this.#start);
    this.#start += 8;
    return value;
  }

  /** The next byte if it is in the buffer already, else undefined (as {@link bufferedU64}). */
  bufferedU8(): number | undefined {
    return this.#end > this.#start ? this.#buffer[this.#start++] : undefined;
  }

  async u8(what: string): Promise<number> {
    return this.#buffer[await this.#need(1, what)];
  }

  /** The next byte without consuming it; -1 at EOF. */
  async peek(): Promise<number> {
    return await this.#fill(1) ? this.#buffer[this.#start] : -1;
  }

  async u16(what: string): Promise<number> {
    return this.#view.getUint16(await this.#need(2, what));
  }

  async u32(what: string): Promise<number> {
    return this.#view.getUint32(await this.#need(4, what));
  }

  /** A u64 as a bigint (record words carry flags in their low bits). */
  async u64(what: string): Promise<bigint> {
    return this.#view.getBigUint64(await this.#need(8, what));
  }

  /** `length` bytes, copied. */
  async bytes(length: number, what: string): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.into(out, what);
    return out;
  }

  /** Fills `out` (e.g. a page of a region). */
  async into(out: Uint8Array, what: string): Promise<void> {
    let done = 0;
    while (done < out.length) {
      const step = Math.min(out.length - done, this.#buffer.length);
      const at = await this.#need(step, what);
      out.set(this.#buffer.subarray(at, at + step), done);
      done += step;
    }
  }

  /** A u8 length and that many bytes of text (QEMU's idstr). */
  async idstr(what: string): Promise<string> {
    const length = await this.u8(what);
    return decoder.decode(await this.bytes(length, what));
  }

  /** Everything up to EOF, at most `limit` bytes (more is a ProtocolError). */
  async rest(limit: number, what: string): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const available = this.#end - this.#start;
      if (available > 0) {
        total += available;
        if (total > limit) throw new ProtocolError(what, `more than ${limit} bytes`);
        parts.push(this.#buffer.slice(this.#start, this.#end));
        this.#start = this.#end;
      }
      if (!await this.#fill(1)) break;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const part of parts) out.set(part, at), (at += part.length);
    return out;
  }
}
