/**
 * QEMU's main migration channel as a destination reads it (docs/QEMU.md): the header and
 * configuration, the RAM sections (block list, zero-page and page records, the end of each
 * section and MULTIFD_FLUSH, which are multifd sync points), then everything after the last
 * RAM section verbatim. Independent of sockets and Workers: the bytes come from any
 * {@link ByteSource}, RAM blocks are whatever the handler gives, sync points are the
 * handler's; so it can be fuzzed alone (tests/qemu_stream_fuzz.test.ts).
 * @module
 */
import { ProtocolError } from "../multifd/wire.ts";
import type { StreamReader } from "./stream_reader.ts";
import { QEMU_PAGE_SIZE, QEMU_VM_FILE_MAGIC, QEMU_VM_FILE_VERSION } from "./wire.ts";

/** Where a RAM block's pages land: its size, a window for writing its bytes, and a zero-fill. */
export interface RamBlockTarget {
  readonly size: number;
  /** A window the parser writes into (its pages backed first: Region.writable). */
  view(offset: number, length: number): Uint8Array;
  /**
   * Makes the page at `offset` read as zeros, writing it only if it is not zero already (as
   * QEMU's ram_handle_compressed: a page never touched stays untouched). It may be queued
   * until {@link flushZeroPages}.
   */
  zeroPage(offset: number): void;
  /** Applies the zero pages queued; the parser calls it before any other write and each barrier. */
  flushZeroPages(): void;
}

/** What the stream asks of its destination. */
export interface MainStreamHandler {
  /** START's block list, in QEMU's order (validated): where each block lands. */
  blocks(list: { name: string; bytes: number }[]): RamBlockTarget[];
  /** A multifd sync point: resolves once every channel has read its SYNC and may go on. */
  barrier(): Promise<void>;
}

/** What the stream held besides RAM, and what it was like. */
export interface MainStreamFacts {
  /** The machine type named by the configuration section. */
  machine: string;
  /** The header and configuration section, verbatim. */
  head: Uint8Array;
  /** Everything after the last RAM section (device sections, EOF, vmdesc), verbatim. */
  tail: Uint8Array;
  /** MULTIFD_FLUSH records were the sync points (QEMU ≥ 8.1), not the ends of sections (7.2). */
  syncPerPass: boolean;
  sections: number;
  zeroPageRecords: number;
  mainChannelPages: number;
  commands: number[];
}

// Section types and RAM record flags of QEMU's main stream (savevm.h, ram.c).
const Section = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  SUBSECTION: 0x05,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
};
/** QEMU_VM_COMMAND commands understood: SWITCHOVER_START (QEMU ≥ 9.2: "the source is about to stop the VM"). */
const Command = { SWITCHOVER_START: 11 };
const SECTION_FOOTER = 0x7e;
const Ram = {
  ZERO: 0x02,
  MEM_SIZE: 0x04,
  PAGE: 0x08,
  EOS: 0x10,
  CONTINUE: 0x20,
  XBZRLE: 0x40,
  HOOK: 0x80,
  COMPRESS_PAGE: 0x100,
  MULTIFD_FLUSH: 0x200,
};
const RAM_SECTION_VERSION = 4;
/** Longest machine type name accepted in the configuration section (QEMU's are ~20 bytes). */
const MAX_MACHINE_NAME_BYTES = 256;
const PAGE_MASK = BigInt(QEMU_PAGE_SIZE - 1);
/** RAM block ids accepted (they become file names: "/" is replaced there). */
const BLOCK_NAME = /^[\w.:/@-]+$/;
/**
 * Most RAM blocks a stream may declare: each becomes a file, a mapping and an fd held for the
 * receive (a `-machine pc` guest has about ten; QEMU's RAMBlock list is not limited, ours is).
 */
export const MAX_RAM_BLOCKS = 256;

/**
 * Reads the main channel after its 4-byte magic (read when the channel was told apart),
 * applying RAM records through `handler`; at most `limits.maxRamBytes` of RAM and
 * `limits.maxStateBytes` of tail are accepted.
 */
export async function readMainStream(
  stream: StreamReader,
  handler: MainStreamHandler,
  limits: { maxRamBytes: number; maxStateBytes: number },
): Promise<MainStreamFacts> {
  // Header and configuration: kept verbatim (the start of state.bin).
  const head: number[] = [];
  // The magic ("QEVM") was read when the channel was told apart from the multifd ones.
  const version = await stream.u32("qemu.header");
  if (version !== QEMU_VM_FILE_VERSION) throw new ProtocolError("qemu.header", `file version ${version}`);
  pushU32(head, QEMU_VM_FILE_MAGIC), pushU32(head, version);
  let machine = "";
  if (await stream.peek() === Section.CONFIGURATION) {
    head.push(await stream.u8("qemu.configuration"));
    const length = await stream.u32("qemu.configuration");
    if (length > MAX_MACHINE_NAME_BYTES) {
      throw new ProtocolError("qemu.configuration", `a machine type of ${length} bytes`);
    }
    const name = await stream.bytes(length, "qemu.configuration");
    pushU32(head, length), head.push(...name);
    machine = new TextDecoder().decode(name);
    if (await stream.peek() === Section.SUBSECTION) {
      throw new ProtocolError(
        "qemu.configuration",
        "configuration subsections (-uuid with validate-uuid, x-ignore-shared) are not supported",
      );
    }
  }

  const blocks = new Map<string, RamBlockTarget>();
  let started = false;
  let ramSection = -1;
  let sections = 0;
  let zeroPageRecords = 0;
  let mainChannelPages = 0;
  let lastBlock: RamBlockTarget | undefined;
  /** Whether the stream syncs once per pass (MULTIFD_FLUSH records, QEMU ≥ 8.1) rather than per section (7.2). */
  let syncPerPass = false;
  /** QEMU_VM_COMMANDs read between RAM sections (ids). */
  const commands: number[] = [];

  const blockOf = async (flags: number): Promise<RamBlockTarget> => {
    if (flags & Ram.CONTINUE) {
      if (!lastBlock) throw new ProtocolError("qemu.ram.block", "CONTINUE without a block before it");
      return lastBlock;
    }
    const name = await stream.idstr("qemu.ram.block");
    const region = blocks.get(name);
    if (!region) throw new ProtocolError("qemu.ram.block", `unknown RAM block "${name}"`);
    return (lastBlock = region);
  };

  /** The zero pages queued in every block, applied: before a write or a barrier, so the order holds. */
  const flushZeroPages = () => {
    for (const block of blocks.values()) block.flushZeroPages();
  };

  /** One RAM section's records, up to and including its EOS. */
  const ramRecords = async (start: boolean) => {
    for (;;) {
      const word = stream.bufferedU64() ?? await stream.u64("qemu.ram.record");
      const flags = Number(word & PAGE_MASK);
      const offset = Number(word & ~PAGE_MASK);
      if (flags & Ram.MEM_SIZE) {
        if (!start || blocks.size > 0) {
          throw new ProtocolError("qemu.ram.record", "MEM_SIZE outside the first section");
        }
        if (offset > limits.maxRamBytes) {
          throw new ProtocolError("qemu.ram.size", `${offset} bytes of RAM (the limit: ${limits.maxRamBytes})`);
        }
        const list: { name: string; bytes: number }[] = [];
        for (let total = offset; total > 0;) {
          const name = await stream.idstr("qemu.ram.block");
          const bytes = Number(await stream.u64("qemu.ram.block"));
          if (bytes <= 0 || bytes > total || bytes % QEMU_PAGE_SIZE !== 0 || list.some((b) => b.name === name)) {
            throw new ProtocolError("qemu.ram.block", `block "${name}" of ${bytes} bytes (of ${total} left)`);
          }
          if (!BLOCK_NAME.test(name)) throw new ProtocolError("qemu.ram.block", `block id "${name}"`);
          if (list.length === MAX_RAM_BLOCKS) {
            throw new ProtocolError("qemu.ram.block", `more than ${MAX_RAM_BLOCKS} RAM blocks`);
          }
          list.push({ name, bytes });
          total -= bytes;
        }
        const targets = handler.blocks(list);
        list.forEach((block, i) => blocks.set(block.name, targets[i]));
        started = true;
        continue;
      }
      if (flags === Ram.MULTIFD_FLUSH) {
        // QEMU ≥ 8.1 (without the 8.0 machine compat): one sync per pass over RAM, marked
        // here, instead of one per section; its EOS is then no barrier.
        if (!started) throw new ProtocolError("qemu.ram.record", "MULTIFD_FLUSH before MEM_SIZE");
        syncPerPass = true;
        flushZeroPages();
        await handler.barrier();
        continue;
      }
      if (flags === Ram.EOS) {
        flushZeroPages();
        if (!syncPerPass) await handler.barrier();
        return;
      }
      const kind = flags & ~Ram.CONTINUE;
      if (kind === Ram.ZERO || kind === Ram.PAGE) {
        const region = flags & Ram.CONTINUE && lastBlock ? lastBlock : await blockOf(flags);
        if (offset + QEMU_PAGE_SIZE > region.size) {
          throw new ProtocolError("qemu.ram.offset", `${offset} is outside a block of ${region.size} bytes`);
        }
        if (kind === Ram.ZERO) {
          const fill = stream.bufferedU8() ?? await stream.u8("qemu.ram.zero");
          if (fill === 0) region.zeroPage(offset);
          else {
            flushZeroPages();
            region.view(offset, QEMU_PAGE_SIZE).fill(fill);
          }
          zeroPageRecords++;
        } else {
          flushZeroPages();
          await stream.into(region.view(offset, QEMU_PAGE_SIZE), "qemu.ram.page");
          mainChannelPages++;
        }
        continue;
      }
      if (flags & (Ram.XBZRLE | Ram.COMPRESS_PAGE | Ram.HOOK)) {
        throw new ProtocolError(
          "qemu.ram.record",
          `flags 0x${flags.toString(16)}: xbzrle, compress or RDMA are not supported`,
        );
      }
      throw new ProtocolError("qemu.ram.record", `unknown flags 0x${flags.toString(16)}`);
    }
  };

  const footer = async (sectionId: number) => {
    const mark = await stream.u8("qemu.section.footer");
    const id = await stream.u32("qemu.section.footer");
    if (mark !== SECTION_FOOTER || id !== sectionId) {
      throw new ProtocolError("qemu.section.footer", `0x${mark.toString(16)} ${id}, expected 0x7e ${sectionId}`);
    }
  };

  // RAM sections until the END of "ram": each ends with an EOS, the barrier of its SYNCs.
  for (let ended = false; !ended;) {
    const type = await stream.u8("qemu.section");
    if (type === Section.START) {
      const sectionId = await stream.u32("qemu.section");
      const name = await stream.idstr("qemu.section");
      await stream.u32("qemu.section"); // instance id
      const version = await stream.u32("qemu.section");
      if (name !== "ram") {
        throw new ProtocolError("qemu.section", `iterable section "${name}": only "ram" is supported`);
      }
      if (ramSection >= 0) throw new ProtocolError("qemu.section", "a second START of ram");
      if (version !== RAM_SECTION_VERSION) throw new ProtocolError("qemu.section", `ram version ${version}`);
      ramSection = sectionId;
      await ramRecords(true);
      if (!started) throw new ProtocolError("qemu.ram.record", "no MEM_SIZE in the first RAM section");
    } else if (type === Section.PART || type === Section.END) {
      const sectionId = await stream.u32("qemu.section");
      if (sectionId !== ramSection) throw new ProtocolError("qemu.section", `section ${sectionId} is not ram's`);
      await ramRecords(false);
      ended = type === Section.END;
    } else if (type === Section.COMMAND) {
      const command = await stream.u16("qemu.command");
      const length = await stream.u16("qemu.command");
      const data = await stream.bytes(length, "qemu.command");
      if (command !== Command.SWITCHOVER_START) {
        throw new ProtocolError(
          "qemu.command",
          `command ${command} (postcopy, return path and COLO are not supported)`,
        );
      }
      void data;
      commands.push(command);
      continue;
    } else {
      throw new ProtocolError(
        "qemu.section",
        `section type ${type} before the end of RAM (postcopy, commands and other sections are not supported)`,
      );
    }
    sections++;
    await footer(ramSection);
  }

  // Device sections, EOF and vmdesc: verbatim, until QEMU closes the main channel.
  const tail = await stream.rest(limits.maxStateBytes, "qemu.state");
  return {
    machine,
    head: Uint8Array.from(head),
    tail,
    syncPerPass,
    sections,
    zeroPageRecords,
    mainChannelPages,
    commands,
  };
}

function pushU32(out: number[], value: number): void {
  out.push(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
}
