// Syntax highlighting for fenced code blocks: a keyword/comment/string/number tokenizer per
// language family (C-like, JS, Python, Rust, shell, SQL, JSON, config files), with aliases for
// the fence names models use. Good enough to make code readable; not a parser.
//
// Rule: the source goes into the page only as text (`Text` nodes and `textContent` of classed
// `<span>`s), so code a model writes is shown, never interpreted. An unknown language is plain
// text.

import { el } from "./dom.js";

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
export function highlight(code, source, lang) {
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
