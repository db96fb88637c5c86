/**
 * A source check for the rule next to `addressOf` in ffi/mod.ts: an address keeps nothing
 * alive, so memory whose address a native call reads must still be referenced after that
 * call. The mistake it catches is the one that made the region checksum read freed memory
 * under Bun (1a68440): a local typed array whose address is taken in a statement and that
 * nothing touches afterwards — the engine may collect it, and reuse its bytes, before or
 * while the native call reads them.
 *
 * Heuristic, on source text: for every `addressOf(…)` whose argument's first identifier is
 * a `const`/`let`/`var` declared in the same function (not `this.…`, not a parameter or a
 * captured variable: their holders live elsewhere), that identifier must appear again after
 * the statement that takes the address and before the function ends (`keepAlive(x)`,
 * `return x`, a field that stores it or its buffer). Where something else holds it, or no
 * native call reads the memory, the line says so in a comment: `// held: <why>`.
 * @module
 */

/** One address taken of a local that nothing references afterwards. */
export interface UnheldAddress {
  /** 1-based line of the `addressOf` call. */
  line: number;
  /** The local whose memory the address points into. */
  local: string;
}

/** The source with comments and string/template contents blanked (same length, same lines). */
function code(source: string): string {
  return source.replace(
    /\/\/[^\n]*|\/\*[\s\S]*?\*\/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`/g,
    (text) => text.replace(/[^\n]/g, " "),
  );
}

/** Index of the bracket closing the one opened at `open`. */
function closing(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if ("([{".includes(text[i])) depth++;
    else if (")]}".includes(text[i]) && --depth === 0) return i;
  }
  return text.length;
}

/** Index of the `{` opening the innermost function body around `at` (-1: none, top level). */
function functionBodyStart(text: string, at: number): number {
  let depth = 0;
  for (let i = at; i >= 0; i--) {
    const ch = text[i];
    if (ch === "}") depth++;
    else if (ch === "{" && depth-- === 0) {
      depth = 0;
      const before = text.slice(Math.max(0, i - 200), i);
      const isFunction = /(\)\s*(:\s*[^{};]+)?|=>)\s*$/.test(before) &&
        !/\b(if|for|while|switch|catch)\s*\([^{};]*\)\s*$/.test(before);
      if (isFunction) return i;
    }
  }
  return -1;
}

/** Index of the first character of the statement that contains `at`. */
function statementStart(text: string, at: number): number {
  let depth = 0;
  for (let i = at - 1; i >= 0; i--) {
    const ch = text[i];
    if (ch === ")" || ch === "]") depth++;
    else if (ch === "(" || ch === "[") depth--;
    else if ((ch === ";" || ch === "{" || ch === "}") && depth <= 0) return i + 1;
  }
  return 0;
}

/**
 * Index just past the statement that contains `at` (inside a call's arguments: the calls
 * around it close first), or of the `}` that ends its block first.
 */
function statementEnd(text: string, at: number): number {
  let depth = 0;
  for (let i = at; i < text.length; i++) {
    const ch = text[i];
    if ("([{".includes(ch)) depth++;
    else if (ch === ")" || ch === "]") depth--;
    else if (ch === "}" && depth-- <= 0) return i;
    else if (ch === ";" && depth <= 0) return i + 1;
  }
  return text.length;
}

/** Every `addressOf` of a local in `source` whose local nothing references after the statement. */
export function unheldAddresses(source: string): UnheldAddress[] {
  const text = code(source);
  const lines = source.split("\n");
  const found: UnheldAddress[] = [];
  for (const call of text.matchAll(/\baddressOf\s*\(/g)) {
    const line = text.slice(0, call.index).split("\n").length;
    if (/\/\/.*\bheld:/.test(lines[line - 1])) continue;
    const open = call.index + call[0].length - 1;
    const argument = text.slice(open + 1, closing(text, open)).trim();
    if (argument === "" || argument.startsWith("this.") || argument.startsWith("this[")) continue;
    const local = /^(?:new\s+\w+\s*\(\s*)?([A-Za-z_$][\w$]*)/.exec(argument)?.[1];
    const body = functionBodyStart(text, call.index);
    if (local === undefined || body < 0) continue;
    // In an arrow function's expression body: the local is captured, held by the closure.
    if (text.slice(statementStart(text, call.index), call.index).includes("=>")) continue;
    const before = text.slice(body, call.index);
    if (!new RegExp(`\\b(?:const|let|var)\\s+(?:[{[][^=]*)?\\b${local}\\b`).test(before)) continue;
    const after = text.slice(statementEnd(text, open), closing(text, body));
    if (new RegExp(`(?<![\\w$.])${local.replace(/\$/g, "\\$")}(?![\\w$])`).test(after)) continue;
    found.push({ line, local });
  }
  return found;
}
