// Markdown: a small renderer for what chat models write (headings, paragraphs, emphasis, inline
// code, links, lists, block quotes, tables, rules, fenced code with a copy button), and
// `MarkdownStream`, which renders an answer incrementally as it streams.
//
// Rules this file keeps:
// - Model output is untrusted. The renderer returns DOM nodes built with `createElement`, `Text`
//   nodes and `textContent`; it never writes HTML strings, so a `<script>` or `onerror=` in an
//   answer is shown as the text it is.
// - Links are only http(s) and mailto; images are not loaded (they become links), so the page
//   fetches nothing a model names.
// - Streaming is incremental: finished blocks are rendered once and kept; only the last, still
//   open block is rebuilt per update, and the result equals rendering the whole text at once.

import { copyText, el } from "./dom.js";
import { highlight } from "./highlight.js";

const FENCE_RE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING_RE = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE_RE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE_RE = /^ {0,3}> ?(.*)$/;
const LIST_RE = /^( *)([-*+]|\d{1,9}[.)])([ \t]+(.*))?$/;
const TABLE_DELIM_RE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

export function renderMarkdown(text) {
  return parseBlocks(text.split("\n"));
}

function isBlank(line) {
  return /^[ \t]*$/.test(line);
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

/** Whether `line` ends the paragraph above it (as in CommonMark, only a list from 1 does). */
function startsBlock(line) {
  const item = LIST_RE.exec(line);
  return (
    FENCE_RE.test(line) ||
    HEADING_RE.test(line) ||
    RULE_RE.test(line) ||
    QUOTE_RE.test(line) ||
    (item !== null && (!/\d/.test(item[2]) || parseInt(item[2], 10) === 1))
  );
}

function parseBlocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    let m;
    if ((m = FENCE_RE.exec(line))) {
      const marker = m[1];
      const body = [];
      i++;
      let closed = false;
      while (i < lines.length) {
        const close = lines[i].trim();
        if (close[0] === marker[0] && close.length >= marker.length && /^(`+|~+)$/.test(close)) {
          closed = true;
          i++;
          break;
        }
        body.push(lines[i]);
        i++;
      }
      out.push(codeBlock(m[2], body.join("\n"), closed));
      continue;
    }
    if ((m = HEADING_RE.exec(line))) {
      const h = el("h" + m[1].length);
      renderInline(m[2] || "", h);
      out.push(h);
      i++;
      continue;
    }
    if (RULE_RE.test(line)) {
      out.push(el("hr"));
      i++;
      continue;
    }
    if (QUOTE_RE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE_RE.exec(lines[i]))) {
        body.push(m[1]);
        i++;
      }
      const quote = el("blockquote");
      quote.append(...parseBlocks(body));
      out.push(quote);
      continue;
    }
    if (LIST_RE.exec(line)) {
      const list = parseList(lines, i);
      out.push(list.node);
      i = list.end;
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_DELIM_RE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const table = parseTable(lines, i);
      out.push(table.node);
      i = table.end;
      continue;
    }
    const para = [];
    while (i < lines.length && !isBlank(lines[i]) && (para.length === 0 || !startsBlock(lines[i]))) {
      para.push(lines[i].trim());
      i++;
    }
    const p = el("p");
    renderInline(para.join("\n"), p);
    out.push(p);
  }
  return out;
}

function parseList(lines, start) {
  const first = LIST_RE.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const baseIndent = first[1].length;
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const n = parseInt(first[2], 10);
    if (n !== 1) list.start = n;
  }
  const items = [];
  let loose = false;
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const m = LIST_RE.exec(line);
    const sameKind = m && /\d/.test(m[2]) === ordered;
    if (m && sameKind && m[1].length <= baseIndent + 1) {
      const contentIndent = m[1].length + m[2].length + Math.min((m[3] || " ").length - (m[4] || "").length, 4);
      items.push({ lines: [m[4] || ""], indent: contentIndent });
      i++;
      continue;
    }
    const item = items[items.length - 1];
    if (isBlank(line)) {
      // A blank line continues the list only if what follows belongs to it.
      let j = i + 1;
      while (j < lines.length && isBlank(lines[j])) j++;
      if (j >= lines.length) break;
      const next = LIST_RE.exec(lines[j]);
      const nextIsItem = next && /\d/.test(next[2]) === ordered && next[1].length <= baseIndent + 1;
      if (!nextIsItem && indentOf(lines[j]) < item.indent) break;
      loose = true;
      for (; i < j; i++) item.lines.push("");
      continue;
    }
    if (indentOf(line) >= Math.min(item.indent, baseIndent + 2)) {
      item.lines.push(line.slice(Math.min(indentOf(line), item.indent)));
      i++;
      continue;
    }
    // A lazy continuation of the item's paragraph.
    if (!isBlank(lines[i - 1]) && !startsBlock(line)) {
      item.lines.push(line.trim());
      i++;
      continue;
    }
    break;
  }
  for (const item of items) {
    const li = el("li");
    const blocks = parseBlocks(item.lines);
    for (const block of blocks) {
      if (!loose && block.tagName === "P") li.append(...block.childNodes);
      else li.append(block);
    }
    list.append(li);
  }
  return { node: list, end: i };
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const cells = [];
  let cell = "";
  for (let k = 0; k < row.length; k++) {
    if (row[k] === "\\" && row[k + 1] === "|") {
      cell += "|";
      k++;
    } else if (row[k] === "|") {
      cells.push(cell.trim());
      cell = "";
    } else {
      cell += row[k];
    }
  }
  cells.push(cell.trim());
  return cells;
}

function parseTable(lines, start) {
  const head = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((d) =>
    d.startsWith(":") && d.endsWith(":") ? "center" : d.endsWith(":") ? "right" : d.startsWith(":") ? "left" : ""
  );
  const wrap = el("div", "table-wrap");
  const table = el("table");
  const thead = el("thead");
  const tbody = el("tbody");
  const row = (cells, tag) => {
    const tr = el("tr");
    head.forEach((_, k) => {
      const cell = el(tag, aligns[k] ? "align-" + aligns[k] : null);
      renderInline(cells[k] || "", cell);
      tr.append(cell);
    });
    return tr;
  };
  thead.append(row(head, "th"));
  let i = start + 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    tbody.append(row(splitRow(lines[i]), "td"));
    i++;
  }
  table.append(thead, tbody);
  wrap.append(table);
  return { node: wrap, end: i };
}

const PUNCT_RE = /[!-/:-@[-`{-~]/;
const ALNUM_RE = /[\p{L}\p{N}]/u;
const URL_RE = /^https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]]/;

function safeUrl(raw) {
  try {
    const url = new URL(raw, location.href);
    return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/** A link to `href` if it is http(s) or mailto, else just its label. `plain`: the label is text. */
function link(href, parent, label, plain) {
  const url = safeUrl(href);
  if (!url) {
    parent.append(label);
    return;
  }
  const a = el("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  if (plain) a.textContent = label;
  else renderInline(label, a);
  parent.append(a);
}

/** Inline Markdown of `text` appended to `parent` as nodes. */
function renderInline(text, parent) {
  let buf = "";
  const flush = () => {
    if (buf) parent.append(buf);
    buf = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && PUNCT_RE.test(text[i + 1])) {
      buf += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\\" && text[i + 1] === "\n") {
      flush();
      parent.append(el("br"));
      i += 2;
      continue;
    }
    if (c === "\n") {
      // Chat text: a single newline is a line break, as in GitHub comments.
      flush();
      parent.append(el("br"));
      i++;
      continue;
    }
    if (c === "`") {
      let n = 1;
      while (text[i + n] === "`") n++;
      const fence = "`".repeat(n);
      let j = text.indexOf(fence, i + n);
      while (j >= 0 && text[j + n] === "`") {
        let k = j;
        while (text[k] === "`") k++;
        j = text.indexOf(fence, k);
      }
      if (j < 0) {
        buf += fence;
        i += n;
        continue;
      }
      let code = text.slice(i + n, j).replace(/\n/g, " ");
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
      flush();
      parent.append(el("code", null, code));
      i = j + n;
      continue;
    }
    if (c === "*" || c === "_" || (c === "~" && text[i + 1] === "~")) {
      const done = emphasis(text, i, parent, flush);
      if (done > i) {
        i = done;
        continue;
      }
      let n = 1;
      while (text[i + n] === c) n++;
      buf += c.repeat(n);
      i += n;
      continue;
    }
    if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const open = c === "!" ? i + 1 : i;
      const close = matchBracket(text, open);
      if (close > 0 && text[close + 1] === "(") {
        const end = text.indexOf(")", close + 2);
        if (end > 0) {
          const target = text.slice(close + 2, end).trim().split(/\s+/)[0].replace(/^<|>$/g, "");
          const label = text.slice(open + 1, close);
          flush();
          // Images are not loaded (the page loads nothing a model names); they become links.
          link(target, parent, label || target, !label);
          i = end + 1;
          continue;
        }
      }
    }
    if (c === "h" && text.startsWith("http", i) && (i === 0 || !ALNUM_RE.test(text[i - 1]))) {
      const m = URL_RE.exec(text.slice(i));
      if (m) {
        flush();
        link(m[0], parent, m[0], true);
        i += m[0].length;
        continue;
      }
    }
    buf += c;
    i++;
  }
  flush();
}

function matchBracket(text, open) {
  let depth = 0;
  for (let k = open; k < text.length; k++) {
    if (text[k] === "\\") k++;
    else if (text[k] === "[") depth++;
    else if (text[k] === "]" && --depth === 0) return k;
    else if (text[k] === "\n" && text[k + 1] === "\n") return -1;
  }
  return -1;
}

/**
 * `*em*`, `**strong**`, `***both***`, `_em_`, `__strong__`, `~~del~~` at `i`: appends the node and
 * returns the index after it, or `i` when the delimiters do not pair up (then they are text).
 */
function emphasis(text, i, parent, flush) {
  const c = text[i];
  let run = 1;
  while (text[i + run] === c) run++;
  const after = text[i + run];
  const before = i > 0 ? text[i - 1] : " ";
  if (after === undefined || /\s/.test(after)) return i;
  if (c === "_" && ALNUM_RE.test(before)) return i;
  const sizes = c === "~" ? [2] : [Math.min(run, 3), 2, 1].filter((n, k, a) => n <= run && a.indexOf(n) === k);
  for (const n of sizes) {
    const delim = c.repeat(n);
    let j = text.indexOf(delim, i + n + (run - n));
    while (j >= 0) {
      const prev = text[j - 1];
      const next = text[j + n];
      const closes =
        !/\s/.test(prev) &&
        prev !== c &&
        next !== c &&
        !(c === "_" && next !== undefined && ALNUM_RE.test(next));
      if (closes && !text.slice(i + n, j).includes("\n\n")) break;
      j = text.indexOf(delim, j + 1);
    }
    if (j < 0) continue;
    flush();
    let node;
    if (c === "~") node = el("del");
    else if (n === 3) {
      node = el("strong");
      const em = el("em");
      node.append(em);
    } else node = el(n === 2 ? "strong" : "em");
    // Extra opening delimiters beyond the pair stay as text.
    if (run > n) parent.append(c.repeat(run - n));
    renderInline(text.slice(i + run, j), node.firstChild && node.firstChild.nodeType === 1 ? node.firstChild : node);
    parent.append(node);
    return j + n;
  }
  return i;
}

function codeBlock(lang, source, closed) {
  const wrap = el("div", "code-block");
  const head = el("div", "code-head");
  head.append(el("span", "code-lang", lang || "text"));
  const copy = el("button", "btn btn-small", "Copy");
  copy.type = "button";
  copy.addEventListener("click", () => copyText(source, copy));
  head.append(copy);
  const pre = el("pre");
  const code = el("code");
  highlight(code, source, lang);
  pre.append(code);
  wrap.append(head, pre);
  if (!closed) wrap.classList.add("open");
  return wrap;
}

/**
 * The answer as it streams: Markdown blocks that can no longer change are rendered once and kept;
 * only the text after the last safe cut (a blank line outside a fence, list or table) is rebuilt.
 */
export class MarkdownStream {
  constructor(root) {
    this.root = root;
    this.committed = 0;
    this.tail = [];
  }

  update(source, final) {
    const cut = final ? source.length : safeCut(source, this.committed);
    for (const node of this.tail) node.remove();
    if (cut > this.committed) {
      this.root.append(...renderMarkdown(source.slice(this.committed, cut)));
      this.committed = cut;
    }
    this.tail = renderMarkdown(source.slice(this.committed));
    this.root.append(...this.tail);
  }
}

/** The last index after `from` where the text so far forms complete blocks. */
function safeCut(source, from) {
  let cut = from;
  let fence = null;
  let pos = from;
  let prevBlank = false;
  let inList = false;
  while (pos < source.length) {
    const nl = source.indexOf("\n", pos);
    if (nl < 0) break; // the last line is still being written
    const line = source.slice(pos, nl);
    if (fence) {
      const t = line.trim();
      if (t[0] === fence[0] && t.length >= fence.length && /^(`+|~+)$/.test(t)) fence = null;
    } else if (isBlank(line)) {
      prevBlank = true;
    } else {
      const starts = !/^[ \t]/.test(line);
      const isItem = LIST_RE.test(line);
      if (prevBlank && starts && !(inList && isItem)) cut = pos;
      if (starts) inList = isItem || (inList && !prevBlank);
      const m = FENCE_RE.exec(line);
      if (m) fence = m[1];
      prevBlank = false;
    }
    pos = nl + 1;
  }
  return cut;
}
