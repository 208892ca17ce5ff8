// Kestrel's built-in chat page: plain browser JavaScript modules, no framework and no build step;
// the server embeds these files and serves them with a strict Content-Security-Policy. This is
// the entry module (the page's only `<script>`). It owns the page: the conversation state, the
// controls' events, rendering each message (a user bubble; an answer with its thinking panel,
// tool calls, Markdown body, stats and copy button), sending a turn and applying the streamed
// chunks, keeping the conversation and settings across visits, the model name and the theme.
//
// The other modules:
//   markdown.js   the safe Markdown renderer and its incremental `MarkdownStream`
//   highlight.js  the keyword-based highlighter for fenced code
//   sse.js        `fetch` with the API key, server error messages, the SSE stream reader
//   apikey.js     the API key dialog and the stored key
//   store.js      local storage that never throws, and the keys the page keeps
//   dom.js        `$`, `el` and copy-to-clipboard
//
// Rules this file keeps:
// - Model output is untrusted. It reaches the DOM only through `textContent`, `Text` nodes and
//   `createElement` (markdown.js builds nodes, it never writes HTML strings), so a `<script>` or
//   `onerror=` in an answer is shown as the text it is.
// - Streaming is incremental: each network read appends to the current answer only. Reasoning and
//   tool-call arguments are appended to one text node each; the answer's finished Markdown blocks
//   are rendered once and kept, and only its last, still-open block is rebuilt per read.
// - The page talks only to its own origin: `GET v1/models`, `POST v1/chat/completions`.

import { forgetKey, updateKeyButton } from "./apikey.js";
import { $, copyText, el } from "./dom.js";
import { MarkdownStream } from "./markdown.js";
import { ApiError, api, errorMessage, sseBatches } from "./sse.js";
import { STORE, store } from "./store.js";

// tests/browser drives the streaming renderer directly (`new MarkdownStream(...)` in the page),
// as it could when this page was one classic script whose top-level names were global.
globalThis.MarkdownStream = MarkdownStream;

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
  $("forget-key").addEventListener("click", forgetKey);
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
