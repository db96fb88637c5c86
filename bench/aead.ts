/**
 * The ciphers of encrypted channels on one core, as a channel Worker runs them: seal and open
 * a 512 KiB packet of 64 KiB messages (the format's unit, src/multifd/aead.ts), the data in
 * cache ("cached") and streaming through 256 MiB ("memory"), beside memcpy of the same bytes.
 * What the README's choice of AEGIS-128L as the default rests on.
 *
 *   deno run -A bench/aead.ts [--reps 5] [--no-save]
 *   ZEROCOPY_MULTIFD_LIB=zig-out/lib/libzerocopy_multifd.so deno run -A bench/aead.ts   # baseline build
 *
 * One JSON line per measurement, then a Markdown table; saved to bench/results/<date>-aead.{jsonl,md}.
 * Rounds are interleaved (every case once per round) and the median taken over rounds.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { addressOf, native } from "../ffi/mod.ts";
import { CIPHER_IDS, MAX_MESSAGE_BYTES, MessageList, TAG_BYTES } from "../src/multifd/aead.ts";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { fillRandom } from "../util/random.ts";
import { Region, runtime } from "../mod.ts";
import { runMain } from "./lib/proc.ts";
import { environment, markdownTable, ResultsFiles } from "./lib/report.ts";

const PACKET = 512 * 1024;
const MEMORY = 256 * 2 ** 20;
const CASES = ["aegis-128l", "aes-256-gcm", "memcpy"] as const;
type Case = typeof CASES[number];

/**
 * Seconds to seal (or open, or copy) `total` bytes in 512 KiB packets walking through `span`
 * bytes of `source`: the native calls a channel makes (zig/aead.zig), a raw key, message
 * numbers as nonces.
 */
function measure(what: Case, op: "seal" | "open", source: Region, span: number, total: number): number {
  const packets = span / PACKET;
  const messages = PACKET / MAX_MESSAGE_BYTES;
  const sealedBytes = PACKET + messages * TAG_BYTES;
  const slots = Math.min(packets, 64);
  const sealed = new Uint8Array(sealedBytes * slots);
  const sink = Region.allocate(span);
  sink.prefault(true);
  const key = new Uint8Array(32).fill(7);
  const cipher = what === "memcpy" ? 0 : CIPHER_IDS[what];
  const list = new MessageList(messages);
  const load = (region: Region, at: number) => {
    list.clear();
    list.push(region.descriptor.address + at, PACKET);
  };
  const slot = (i: number) => addressOf(sealed) + (i % slots) * sealedBytes;
  try {
    if (op === "open") {
      for (let i = 0; i < slots; i++) {
        load(source, i * PACKET);
        native.zc_seal(cipher, key, i * messages, list.words, list.count, slot(i));
      }
    }
    const started = performance.now();
    for (let done = 0, i = 0; done < total; done += PACKET, i++) {
      const at = (i % packets) * PACKET;
      if (what === "memcpy") {
        sink.view(at, PACKET).set(source.view(at, PACKET));
      } else if (op === "seal") {
        load(source, at);
        native.zc_seal(cipher, key, i * messages, list.words, list.count, slot(i));
      } else {
        load(sink, at);
        const rc = native.zc_open(cipher, key, (i % slots) * messages, slot(i), list.words, list.count);
        if (rc !== 0) throw new Error(`open failed: ${rc}`);
      }
    }
    return (performance.now() - started) / 1000;
  } finally {
    void sink.close();
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { reps: { type: "string", default: "5" }, "no-save": { type: "boolean", default: false } },
    strict: true,
  });
  const reps = Number(values.reps);
  const source = Region.allocate(MEMORY);
  fillRandom(source);
  source.prefault(true);
  const files = values["no-save"] ? undefined : new ResultsFiles("aead");
  const records: Record<string, unknown>[] = [];
  const total = 1024 * 2 ** 20;
  for (let rep = 0; rep < reps; rep++) {
    for (const what of CASES) {
      for (const op of what === "memcpy" ? ["seal"] as const : ["seal", "open"] as const) {
        for (const [place, span] of [["cached", PACKET], ["memory", MEMORY]] as const) {
          const seconds = measure(what, op, source, span, total);
          const record = {
            bench: "aead",
            runtime,
            rep,
            case: what,
            op: what === "memcpy" ? "copy" : op,
            data: place,
            GBps: round(total / seconds / 1e9),
          };
          records.push(record);
          files?.append(record);
          out(JSON.stringify(record));
        }
      }
    }
  }
  await source.close();
  const rows = new Map<string, number[]>();
  for (const r of records) {
    const key = `${r.case}|${r.op}|${r.data}`;
    rows.set(key, [...(rows.get(key) ?? []), Number(r.GBps)]);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const table = markdownTable(
    ["case", "operation", "data", "GB/s per core (median)", "min–max", "rounds"],
    [...rows].map(([key, xs]) => [
      ...key.split("|"),
      String(median(xs)),
      `${Math.min(...xs)}–${Math.max(...xs)}`,
      String(xs.length),
    ]),
  );
  const env = environment({ library: process.env.ZEROCOPY_MULTIFD_LIB ?? "default (ffi/library_path.ts)" });
  const report = [
    "# AEAD benchmark",
    "",
    ...Object.entries(env).map(([k, v]) => `- ${k}: ${v}`),
    "",
    "One core; 512 KiB packets of 64 KiB messages; 1 GiB per case and round.",
    "",
    table,
    "",
  ].join("\n");
  out("\n" + report);
  if (files) {
    files.writeMarkdown(report);
    note(`aead: results in ${files.jsonlPath} and ${files.markdownPath}`);
  }
  return 0;
}

if (import.meta.main) await runMain("aead.ts", main);
