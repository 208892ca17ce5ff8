// Kestrel's built-in chat page. Plain browser JavaScript, no framework and no build step; the
// server embeds this file and serves it with a strict Content-Security-Policy.
//
// Rules this file keeps:
// - Model output is untrusted. It reaches the DOM only through `textContent`, `Text` nodes and
//   `createElement` (the Markdown renderer below builds nodes, it never writes HTML strings), so a
//   `<script>` or `onerror=` in an answer is shown as the text it is.
// - Streaming is incremental: each network read appends to the current answer only. Reasoning and
//   tool-call arguments are appended to one text node each; the answer's finished Markdown blocks
//   are rendered once and kept, and only its last, still-open block is rebuilt per read.
// - The page talks only to its own origin: `GET v1/models`, `POST v1/chat/completions`.

"use strict";

const STORE = {
  apiKey: "kestrel.apiKey",
  settings: "kestrel.settings",
  theme: "kestrel.theme",
  chat: "kestrel.chat",
};

const $ = (id) => document.getElementById(id);

/** localStorage that never throws (private windows, disabled storage). */
const store = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      /* storage is optional */
    }
  },
  remove(key) {
    try {
      localStorage.removeItem(key);
    } catch {
      /* storage is optional */
    }
  },
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------------------------------------
// Markdown: a small renderer for what chat models write (headings, paragraphs, emphasis, inline
// code, links, lists, block quotes, tables, rules, fenced code). It returns DOM nodes.

const FENCE_RE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING_RE = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE_RE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE_RE = /^ {0,3}> ?(.*)$/;
const LIST_RE = /^( *)([-*+]|\d{1,9}[.)])([ \t]+(.*))?$/;
const TABLE_DELIM_RE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

function renderMarkdown(text) {
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

// ---------------------------------------------------------------------------------------------
// Syntax highlighting: a keyword/comment/string/number tokenizer per language family. Good enough
// to make code readable; not a parser.

const C_LIKE_KW =
  "auto break case catch char class const constexpr continue default delete do double else enum explicit extern " +
  "final float for friend goto if inline int long namespace new noexcept operator override private protected public " +
  "register return short signed sizeof static struct switch template this throw try typedef typename union unsigned " +
  "using virtual void volatile while abstract boolean byte extends implements import instanceof interface native " +
  "package super synchronized throws transient var func go chan defer fallthrough map range select type string bool " +
  "val fun when object is in out let guard nil self init deinit";
const LANGS = {
  js: {
    kw:
      "async await break case catch class const continue debugger default delete do else export extends finally for " +
      "from function get if import in instanceof let new of return set static super switch this throw try typeof var " +
      "void while with yield interface type enum implements private public protected readonly as keyof declare",
    lit: "true false null undefined NaN Infinity",
    line: "//",
    block: true,
    quotes: "\"'`",
  },
  python: {
    kw:
      "and as assert async await break class continue def del elif else except finally for from global if import in " +
      "is lambda nonlocal not or pass raise return try while with yield match case self print",
    lit: "True False None",
    line: "#",
    quotes: "\"'",
    triple: true,
  },
  rust: {
    kw:
      "as async await break const continue crate dyn else enum extern fn for if impl in let loop match mod move mut " +
      "pub ref return self Self static struct super trait type unsafe use where while macro_rules",
    lit: "true false None Some Ok Err",
    line: "//",
    block: true,
    quotes: '"',
  },
  c: { kw: C_LIKE_KW, lit: "true false null nullptr NULL nil", line: "//", block: true, quotes: "\"'`" },
  sh: {
    kw:
      "if then else elif fi case esac for while until do done in function return local export readonly set unset " +
      "shift source echo exit cd sudo apt apt-get cargo npm git curl",
    lit: "true false",
    line: "#",
    quotes: "\"'",
    vars: true,
  },
  sql: {
    kw:
      "select from where and or not insert into values update set delete create table drop alter add primary key " +
      "foreign references join left right inner outer on group by order having limit offset as distinct union all " +
      "index view case when then else end is null like in exists between asc desc",
    lit: "true false null",
    line: "--",
    block: true,
    quotes: "'\"",
    nocase: true,
  },
  json: { kw: "", lit: "true false null", quotes: '"' },
  conf: { kw: "", lit: "true false null yes no on off", line: "#", quotes: "\"'" },
};
const LANG_ALIASES = {
  javascript: "js", mjs: "js", cjs: "js", jsx: "js", ts: "js", tsx: "js", typescript: "js",
  py: "python", python3: "python", rs: "rust",
  "c++": "c", cpp: "c", cc: "c", cxx: "c", h: "c", hpp: "c", java: "c", go: "c", golang: "c", cs: "c",
  csharp: "c", kotlin: "c", kt: "c", swift: "c", scala: "c", dart: "c", php: "c", cuda: "c",
  bash: "sh", shell: "sh", zsh: "sh", console: "sh", shellscript: "sh",
  yaml: "conf", yml: "conf", toml: "conf", ini: "conf", dockerfile: "conf", makefile: "conf",
  jsonc: "json", json5: "json",
};

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
const tokenizers = new Map();

function tokenizerFor(name) {
  const key = LANG_ALIASES[name] || name;
  const lang = LANGS[key];
  if (!lang) return null;
  if (tokenizers.has(key)) return tokenizers.get(key);
  const comment = [];
  if (lang.block) comment.push("\\/\\*[\\s\\S]*?(?:\\*\\/|$)");
  if (lang.line) comment.push(escapeRe(lang.line) + "[^\\n]*");
  const strings = [];
  if (lang.triple) strings.push('"""[\\s\\S]*?(?:"""|$)', "'''[\\s\\S]*?(?:'''|$)");
  for (const q of lang.quotes) {
    const e = escapeRe(q);
    strings.push(q === "`" ? "`(?:\\\\[\\s\\S]|[^\\\\`])*(?:`|$)" : `${e}(?:\\\\.|[^\\\\\\n${e}])*(?:${e}|$)`);
  }
  const parts = [
    comment.length ? comment.join("|") : "(?!)",
    strings.join("|"),
    "\\b(?:0[xX][\\da-fA-F_]+|0[bB][01_]+|\\d[\\d_]*(?:\\.\\d[\\d_]*)?(?:[eE][+-]?\\d+)?)[a-zA-Z\\d_]*",
    lang.vars ? "\\$\\{[^}\\n]*\\}|\\$[\\w@#?*!$-]" : "(?!)",
    "[A-Za-z_][\\w]*!?",
  ];
  const re = new RegExp(parts.map((p) => `(${p})`).join("|"), "g");
  const words = (s) => new Set(lang.nocase ? s.split(" ").map((w) => w.toLowerCase()) : s.split(" "));
  const tok = { re, kw: words(lang.kw), lit: words(lang.lit), nocase: !!lang.nocase, key };
  tokenizers.set(key, tok);
  return tok;
}

/** Fills `code` with `source` split into classed spans; all text goes in as text. */
function highlight(code, source, lang) {
  const tok = tokenizerFor((lang || "").toLowerCase());
  if (!tok) {
    code.textContent = source;
    return;
  }
  const re = tok.re;
  re.lastIndex = 0;
  let last = 0;
  let plain = "";
  const span = (cls, text) => {
    if (plain) code.append(plain);
    plain = "";
    code.append(el("span", "tok-" + cls, text));
  };
  let m;
  while ((m = re.exec(source))) {
    if (m[0] === "") {
      re.lastIndex++;
      continue;
    }
    plain += source.slice(last, m.index);
    last = re.lastIndex;
    const [text, comment, string, number, variable, word] = m;
    if (comment) span("com", text);
    else if (string) span("str", text);
    else if (number) span("num", text);
    else if (variable) span("var", text);
    else if (word) {
      const w = tok.nocase ? word.toLowerCase() : word;
      if (tok.kw.has(w)) span("kw", text);
      else if (tok.lit.has(w)) span("lit", text);
      else if (word.endsWith("!") && tok.key === "rust") span("fn", text);
      else if (source[last] === "(") span("fn", text);
      else if (/^[A-Z][a-z]/.test(word) && tok.key !== "sh" && tok.key !== "sql") span("type", text);
      else plain += text;
    }
  }
  plain += source.slice(last);
  if (plain) code.append(plain);
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
class MarkdownStream {
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

// ---------------------------------------------------------------------------------------------
// Talking to the server.

class ApiError extends Error {}

async function errorMessage(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.error) return body.error.message || JSON.stringify(body.error);
  } catch {
    /* not JSON */
  }
  return text.trim() || `HTTP ${response.status} ${response.statusText}`;
}

/** `fetch` with the stored API key; a 401 asks for a key and tries again. */
async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = store.get(STORE.apiKey);
    if (key) headers.set("Authorization", "Bearer " + key);
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401) return response;
    const reason = await errorMessage(response);
    if (!(await askForKey(key ? `The server refused the stored key: ${reason}` : `This server needs an API key (${reason}).`))) {
      throw new ApiError(reason);
    }
  }
}

let pendingKeyPrompt = null;

function askForKey(reason) {
  if (pendingKeyPrompt) return pendingKeyPrompt;
  const dialog = $("key-dialog");
  $("key-reason").textContent = reason;
  $("key-input").value = "";
  pendingKeyPrompt = new Promise((resolve) => {
    const done = (key) => {
      $("key-form").onsubmit = null;
      $("key-cancel").onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      pendingKeyPrompt = null;
      updateKeyButton();
      resolve(key);
    };
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      store.set(STORE.apiKey, key);
      done(key);
    };
    $("key-cancel").onclick = () => done(null);
    dialog.oncancel = () => done(null);
  });
  dialog.showModal();
  $("key-input").focus();
  return pendingKeyPrompt;
}

/** The SSE events of a response body, in batches: one batch per network read. */
async function* sseBatches(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n/g, "\n");
      const batch = [];
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        batch.push(parseSse(buffer.slice(0, end)));
        buffer = buffer.slice(end + 2);
      }
      if (batch.length) yield batch;
    }
    if (buffer.trim()) yield [parseSse(buffer)];
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseSse(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return { event, data: data.join("\n") };
}

// ---------------------------------------------------------------------------------------------
// The conversation.

const state = {
  model: null,
  /** `{role, content, reasoning?, toolCalls?, stats?, error?}` per turn, oldest first. */
  history: [],
  /** The AbortController of the answer being streamed. */
  controller: null,
};

const messages = () => $("messages");

function nearBottom() {
  const box = messages();
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom() {
  const box = messages();
  box.scrollTop = box.scrollHeight;
}

function renderUser(text) {
  const msg = el("article", "msg user");
  msg.append(el("div", "bubble", text));
  $("empty").hidden = true;
  messages().append(msg);
}

/** One assistant answer in the DOM: thinking panel, tool calls, answer, stats and copy button. */
class AnswerView {
  constructor() {
    this.root = el("article", "msg assistant");
    this.thinking = el("details", "thinking");
    this.thinking.hidden = true;
    this.thinking.open = true;
    this.thinkingLabel = el("summary", null, "Thinking…");
    this.thinkingBody = el("div", "thinking-body");
    this.thinkingText = document.createTextNode("");
    this.thinkingBody.append(this.thinkingText);
    // The panel follows new reasoning unless the reader has scrolled up in it.
    this.thinkingPinned = true;
    this.thinkingBody.addEventListener("scroll", () => {
      const b = this.thinkingBody;
      this.thinkingPinned = b.scrollHeight - b.scrollTop - b.clientHeight < 24;
    });
    this.thinking.append(this.thinkingLabel, this.thinkingBody);
    this.tools = el("div", "tool-calls");
    this.answer = el("div", "answer markdown");
    this.errorBox = el("div", "error-box");
    this.errorBox.hidden = true;
    this.footer = el("div", "msg-footer");
    this.stats = el("span", "stats");
    this.copy = el("button", "btn btn-small copy", "Copy");
    this.copy.type = "button";
    this.copy.addEventListener("click", () => copyText(this.content, this.copy));
    this.footer.append(this.stats, this.copy);
    this.root.append(this.thinking, this.tools, this.answer, this.errorBox, this.footer);
    this.markdown = new MarkdownStream(this.answer);
    this.content = "";
    this.reasoning = "";
    this.toolCalls = [];
    this.toolViews = [];
    this.dirty = false;
  }

  addReasoning(text) {
    if (this.thinking.hidden) {
      this.thinking.hidden = false;
      this.thinkingStart = performance.now();
    }
    this.reasoning += text;
    this.thinkingText.appendData(text);
  }

  addContent(text) {
    if (!this.content && this.reasoning) this.endThinking(true);
    this.content += text;
    this.dirty = true;
  }

  endThinking(collapse) {
    if (this.thinkingEnd || this.thinking.hidden) return;
    this.thinkingEnd = performance.now();
    const seconds = (this.thinkingEnd - this.thinkingStart) / 1000;
    this.thinkingLabel.textContent = `Thought for ${seconds.toFixed(1)} s`;
    if (collapse) this.thinking.open = false;
  }

  addToolCall(delta) {
    const index = delta.index ?? this.toolCalls.length;
    let call = this.toolCalls[index];
    let view = this.toolViews[index];
    if (!call) {
      call = this.toolCalls[index] = { id: "", type: "function", function: { name: "", arguments: "" } };
      view = this.toolViews[index] = {
        root: el("div", "tool-call"),
        name: el("span", "tool-name"),
        args: document.createTextNode(""),
      };
      const head = el("div", "tool-head");
      head.append(el("span", "tool-badge", "tool call"), view.name);
      const pre = el("pre", "tool-args");
      pre.append(view.args);
      view.root.append(head, pre);
      this.tools.append(view.root);
    }
    if (delta.id) call.id = delta.id;
    const fn = delta.function || {};
    if (fn.name) {
      call.function.name += fn.name;
      view.name.textContent = call.function.name;
    }
    if (fn.arguments) {
      call.function.arguments += fn.arguments;
      view.args.appendData(fn.arguments);
    }
  }

  flush() {
    if (this.thinkingPinned && this.thinking.open && !this.thinkingEnd) {
      this.thinkingBody.scrollTop = this.thinkingBody.scrollHeight;
    }
    if (!this.dirty) return;
    this.dirty = false;
    this.markdown.update(this.content, false);
  }

  showError(message) {
    this.errorBox.hidden = false;
    this.errorBox.textContent = message;
  }

  finish() {
    this.markdown.update(this.content, true);
    this.endThinking(false);
    if (this.thinking.hidden === false && !this.thinkingEnd) this.thinkingLabel.textContent = "Thinking";
    this.toolCalls.forEach((call, k) => {
      try {
        this.toolViews[k].args.data = JSON.stringify(JSON.parse(call.function.arguments), null, 2);
      } catch {
        /* keep the text as it came */
      }
    });
    if (!this.content && !this.reasoning && !this.toolCalls.length) this.copy.hidden = true;
  }

  setStats(text) {
    this.stats.textContent = text;
  }
}

function statsLine(timing, usage, finishReason, stopped) {
  const parts = [];
  if (timing.first != null) parts.push(`TTFT ${Math.round(timing.first - timing.start)} ms`);
  const tokens = usage ? usage.completion_tokens : null;
  // Below 10 ms the tokens came in one read (a replayed or buffered stream): no honest rate.
  if (tokens != null && timing.first != null && timing.last - timing.first >= 10 && tokens > 1) {
    // Decode speed: the tokens after the first over the time after the first.
    parts.push(`${((tokens - 1) / ((timing.last - timing.first) / 1000)).toFixed(1)} tok/s`);
  }
  if (tokens != null) parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
  else if (timing.chunks) parts.push(`≈${timing.chunks} tokens`);
  if (stopped) parts.push("stopped");
  else if (finishReason === "length") parts.push("hit max tokens");
  return parts.join(" · ");
}

function settings() {
  const maxTokens = parseInt($("max-tokens").value, 10);
  return {
    system: $("system-prompt").value.trim(),
    temperature: parseFloat($("temperature").value),
    maxTokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : null,
    thinking: $("thinking").checked,
  };
}

function requestBody() {
  const s = settings();
  const msgs = [];
  if (s.system) msgs.push({ role: "system", content: s.system });
  for (const turn of state.history) {
    if (turn.error && turn.role === "assistant" && !turn.content) continue;
    msgs.push({ role: turn.role, content: turn.content });
  }
  const body = {
    messages: msgs,
    stream: true,
    stream_options: { include_usage: true },
    temperature: s.temperature,
    enable_thinking: s.thinking,
  };
  if (state.model) body.model = state.model;
  if (s.maxTokens) body.max_tokens = s.maxTokens;
  return body;
}

async function send(text) {
  if (state.controller) return;
  state.history.push({ role: "user", content: text });
  renderUser(text);
  const view = new AnswerView();
  messages().append(view.root);
  scrollToBottom();
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true, view);

  const timing = { start: performance.now(), first: null, last: null, chunks: 0 };
  let usage = null;
  let finishReason = null;
  let stopped = false;
  let error = null;
  let sawDone = false;
  try {
    const response = await api("v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) throw new ApiError(await errorMessage(response));
    for await (const batch of sseBatches(response)) {
      const stick = nearBottom();
      for (const event of batch) {
        if (event.data === "[DONE]") {
          sawDone = true;
          break;
        }
        let chunk;
        try {
          chunk = JSON.parse(event.data);
        } catch {
          if (event.event === "error") throw new ApiError(event.data);
          continue;
        }
        if (event.event === "error" || chunk.error) {
          const e = chunk.error || chunk;
          throw new ApiError(typeof e === "string" ? e : e.message || JSON.stringify(e));
        }
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          if ((choice.index ?? 0) !== 0) continue;
          const delta = choice.delta || {};
          const reasoning = delta.reasoning_content ?? delta.reasoning;
          let got = false;
          if (reasoning) {
            view.addReasoning(reasoning);
            got = true;
          }
          if (delta.content) {
            view.addContent(delta.content);
            got = true;
          }
          for (const call of delta.tool_calls || []) {
            view.addToolCall(call);
            got = true;
          }
          if (got) {
            const now = performance.now();
            if (timing.first == null) timing.first = now;
            timing.last = now;
            timing.chunks++;
          }
          if (choice.finish_reason) finishReason = choice.finish_reason;
        }
      }
      view.flush();
      if (stick) scrollToBottom();
      if (sawDone) break;
    }
    if (!sawDone && !finishReason) throw new ApiError("the server closed the stream before the answer finished");
  } catch (e) {
    if (e.name === "AbortError" || controller.signal.aborted) stopped = true;
    else error = e instanceof ApiError ? e.message : `Could not reach the server: ${e.message}`;
  }
  const stick = nearBottom();
  view.finish();
  if (error) view.showError(error);
  const stats = statsLine(timing, usage, finishReason, stopped);
  view.setStats(stats);
  state.history.push({
    role: "assistant",
    content: view.content,
    reasoning: view.reasoning,
    toolCalls: view.toolCalls,
    stats,
    error,
  });
  saveChat();
  state.controller = null;
  setBusy(false, view);
  if (stick) scrollToBottom();
}

function setBusy(busy, view) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
  view.root.classList.toggle("streaming", busy);
  if (!busy) $("prompt").focus();
}

function stop() {
  if (state.controller) state.controller.abort();
}

function newChat() {
  stop();
  state.history = [];
  saveChat();
  for (const node of [...messages().children]) if (node.id !== "empty") node.remove();
  $("empty").hidden = false;
  $("prompt").focus();
}

function saveChat() {
  store.set(STORE.chat, JSON.stringify(state.history));
}

/** Re-renders a conversation kept from an earlier visit. */
function restoreChat() {
  let history;
  try {
    history = JSON.parse(store.get(STORE.chat) || "[]");
  } catch {
    history = [];
  }
  if (!Array.isArray(history)) return;
  for (const turn of history) {
    if (!turn || typeof turn.content !== "string") continue;
    if (turn.role === "user") renderUser(turn.content);
    else if (turn.role === "assistant") {
      const view = new AnswerView();
      if (turn.reasoning) {
        view.addReasoning(String(turn.reasoning));
        view.thinkingLabel.textContent = "Thinking";
        view.thinking.open = false;
      }
      for (const [index, call] of (Array.isArray(turn.toolCalls) ? turn.toolCalls : []).entries()) {
        if (call && call.function) view.addToolCall({ index, id: call.id, function: call.function });
      }
      view.content = turn.content;
      view.finish();
      if (turn.error) view.showError(String(turn.error));
      view.setStats(String(turn.stats || ""));
      messages().append(view.root);
    } else continue;
    state.history.push(turn);
  }
  scrollToBottom();
}

async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API needs a secure context; plain http on a LAN address falls back to this.
    const area = el("textarea");
    area.value = text;
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => {
    button.textContent = label;
  }, 1200);
}

// ---------------------------------------------------------------------------------------------
// Model name, settings, theme.

async function loadModel() {
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await api("v1/models");
      if (response.status === 503 && attempt < 600) {
        $("model-name").textContent = "loading…";
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (!response.ok) throw new ApiError(await errorMessage(response));
      const body = await response.json();
      const card = body.data && body.data[0];
      state.model = card ? card.id : null;
      $("model-name").textContent = state.model || "no model";
      if (card && card.max_model_len) {
        $("max-tokens").max = String(card.max_model_len);
        $("max-tokens").placeholder = `rest of the context (${card.max_model_len})`;
      }
      return;
    } catch (e) {
      $("model-name").textContent = "unavailable";
      $("model-name").title = e.message;
      return;
    }
  }
}

function updateKeyButton() {
  $("forget-key").hidden = !store.get(STORE.apiKey);
}

function loadSettings() {
  let saved = {};
  try {
    saved = JSON.parse(store.get(STORE.settings) || "{}") || {};
  } catch {
    saved = {};
  }
  if (typeof saved.system === "string") $("system-prompt").value = saved.system;
  if (typeof saved.temperature === "number") $("temperature").value = String(saved.temperature);
  if (typeof saved.maxTokens === "number") $("max-tokens").value = String(saved.maxTokens);
  if (typeof saved.thinking === "boolean") $("thinking").checked = saved.thinking;
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
}

function saveSettings() {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  store.set(STORE.settings, JSON.stringify(settings()));
}

const THEMES = ["auto", "light", "dark"];
const THEME_ICONS = { auto: "◐", light: "☀", dark: "☾" };

function applyTheme(theme) {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  const button = $("theme-toggle");
  button.textContent = THEME_ICONS[theme];
  button.title = theme === "auto" ? "Theme: follows the system" : `Theme: ${theme}`;
  button.setAttribute("aria-label", button.title);
}

function autosize() {
  const area = $("prompt");
  area.style.height = "auto";
  area.style.height = Math.min(area.scrollHeight, 200) + "px";
}

function init() {
  loadSettings();
  let theme = store.get(STORE.theme);
  if (!THEMES.includes(theme)) theme = "auto";
  applyTheme(theme);
  $("theme-toggle").addEventListener("click", () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    store.set(STORE.theme, theme);
    applyTheme(theme);
  });
  for (const id of ["system-prompt", "temperature", "max-tokens", "thinking"]) {
    $(id).addEventListener("input", saveSettings);
    $(id).addEventListener("change", saveSettings);
  }
  $("settings-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("settings-open");
    $("settings-toggle").setAttribute("aria-expanded", String(open));
  });
  $("forget-key").addEventListener("click", () => {
    store.remove(STORE.apiKey);
    updateKeyButton();
  });
  $("new-chat").addEventListener("click", newChat);
  $("stop").addEventListener("click", stop);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.controller) return;
    $("prompt").value = "";
    autosize();
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("prompt").addEventListener("input", autosize);
  updateKeyButton();
  restoreChat();
  loadModel();
  $("prompt").focus();
}

init();
