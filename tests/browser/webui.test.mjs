// The built-in chat page in a real browser: Debian's Chromium, headless, driven by playwright-core,
// against the real `kestrel serve` binary running a tiny random-weight Qwen3 with the real Qwen3
// tokenizer (and, for one test, the real Qwen2.5-Coder GGUF). tests/browser/run.sh starts the
// servers and sets:
//   KESTREL_URL        the page of a server without an API key
//   KESTREL_KEYED_URL  the page of a server started with --api-key $KESTREL_API_KEY
//   KESTREL_REAL_URL   the page of a server running the real Qwen2.5-Coder-0.5B-Instruct GGUF
//   CHROMIUM_BIN       the browser (default /usr/bin/chromium)
//   KESTREL_SCREENSHOT=1 and KESTREL_DOCS: write $KESTREL_DOCS/webui.png mid-answer.
//
// The page is driven only through its own controls. Where a random-weight model needs help to
// show a behaviour (opening a `<think>` block, not stopping at EOS), `page.route` adds fields to
// the request the page itself built, and the test checks that request's own fields first.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.KESTREL_URL;
const KEYED = process.env.KESTREL_KEYED_URL;
const REAL = process.env.KESTREL_REAL_URL;
const API_KEY = process.env.KESTREL_API_KEY;
const MODEL = "qwen3-tiny";
/** The `<think>` token id of the Qwen3 vocabulary. */
const THINK_START = "151667";
const TIMEOUT = 60_000;

assert.ok(BASE && KEYED && REAL && API_KEY, "run this through tests/browser/run.sh");

let browser;

before(async () => {
  // Playwright gives the browser a fresh temporary --user-data-dir of its own (it refuses one in
  // `args`), and every test below gets a fresh context: no storage shared between tests.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh context and page on `url`. `modify(body)` may add fields to each chat request the page
 * sends (the page's own body is kept in `requests`). Console errors (a CSP violation is one) and
 * uncaught exceptions are collected and must stay empty.
 */
async function openPage({ url = BASE, modify, viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  page.on("console", (m) => {
    // Chromium logs every 4xx fetch; the tests that cause one check what the page shows instead.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource: the server responded")) {
      problems.push(`console: ${m.text()}`);
    }
  });
  const requests = [];
  if (modify) {
    await page.route("**/v1/chat/completions", async (route) => {
      const body = route.request().postDataJSON();
      requests.push(structuredClone(body));
      modify(body);
      await route.continue({ postData: JSON.stringify(body) });
    });
  }
  await page.goto(url);
  return { context, page, requests, problems };
}

async function waitForModel(page, model = MODEL) {
  await page.waitForFunction((m) => document.getElementById("model-name").textContent === m, model);
}

async function setThinking(page, on) {
  if ((await page.isChecked("#thinking")) !== on) await page.click("label.switch");
  assert.equal(await page.isChecked("#thinking"), on);
}

async function setTemperature(page, value) {
  await page.$eval(
    "#temperature",
    (input, v) => {
      input.value = String(v);
      input.dispatchEvent(new Event("input", { bubbles: true }));
    },
    value,
  );
}

/** Types a message and sends it with Enter; resolves once its answer is on the page. */
async function send(page, text) {
  const count = await page.locator(".msg.assistant").count();
  await page.fill("#prompt", text);
  await page.press("#prompt", "Enter");
  await page.waitForFunction((n) => document.querySelectorAll(".msg.assistant").length > n, count);
}

async function waitIdle(page) {
  await page.waitForFunction(() => !document.body.classList.contains("busy"));
}

const lastAnswer = (page) => page.locator(".msg.assistant").last();

/** `vllm:request_success_total{...,finished_reason="abort"}` from the server's /metrics. */
async function abortedCount() {
  const text = await (await fetch(new URL("metrics", BASE))).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith("vllm:request_success_total{") && l.includes('finished_reason="abort"'));
  assert.ok(line, `no abort counter in /metrics:\n${text}`);
  return Number(line.trim().split(/\s+/).pop());
}

async function close({ context, problems }) {
  await context.close();
  assert.deepEqual(problems, [], "the page logged errors");
}

/** An SSE body in the server's shape. */
function sse(events) {
  const base = { id: "chatcmpl-test", object: "chat.completion.chunk", created: 0, model: MODEL };
  return (
    events
      .map((e) => `data: ${typeof e === "string" ? e : JSON.stringify("error" in e ? e : { ...base, ...e })}\n\n`)
      .join("") + "data: [DONE]\n\n"
  );
}

const delta = (d, finish_reason = null) => ({ choices: [{ index: 0, delta: d, logprobs: null, finish_reason }] });

test("the page loads without a key, under its CSP, and names the model", async () => {
  const t = await openPage();
  const response = await t.page.request.get(BASE);
  assert.match(response.headers()["content-security-policy"], /script-src 'self'/);
  await waitForModel(t.page);
  assert.equal(await t.page.title(), "Kestrel");
  await close(t);
});

test("the answer appears in several increments before it finishes", async () => {
  const t = await openPage({ modify: (body) => (body.ignore_eos = true) });
  const { page, requests } = t;
  await waitForModel(page);
  await setThinking(page, false);
  await setTemperature(page, 0);
  await page.fill("#max-tokens", "128");
  // Record the answer's length at every DOM change while the message is still streaming.
  await page.evaluate(() => {
    window.__lengths = [];
    new MutationObserver(() => {
      const msg = [...document.querySelectorAll(".msg.assistant")].pop();
      if (msg && msg.classList.contains("streaming")) {
        window.__lengths.push(msg.querySelector(".answer").textContent.length);
      }
    }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
  });
  await send(page, "Tell me a long story.");
  await waitIdle(page);

  const sent = requests[0];
  assert.equal(sent.stream, true);
  assert.deepEqual(sent.stream_options, { include_usage: true });
  assert.equal(sent.enable_thinking, false);
  assert.equal(sent.max_tokens, 128);
  assert.equal(sent.temperature, 0);
  assert.equal(sent.model, MODEL);
  assert.deepEqual(sent.messages, [{ role: "user", content: "Tell me a long story." }]);

  const final = (await lastAnswer(page).locator(".answer").textContent()).length;
  const lengths = await page.evaluate(() => window.__lengths);
  const growing = new Set(lengths.filter((n) => n > 0 && n < final));
  assert.ok(growing.size >= 3, `only ${growing.size} partial lengths before the end (final ${final}): ${lengths}`);
  const stats = await lastAnswer(page).locator(".stats").textContent();
  assert.match(stats, /TTFT \d+ ms · [\d.]+ tok\/s · 128 tokens/);

  // A second turn carries the first one as history.
  await send(page, "And then?");
  await waitIdle(page);
  const history = requests[1].messages;
  assert.equal(history.length, 3);
  assert.equal(history[1].role, "assistant");
  assert.ok(history[1].content.length > 0);

  // The conversation survives a reload (it is kept in the browser) and goes on from there.
  const shown = await lastAnswer(page).locator(".answer").textContent();
  await page.reload();
  await waitForModel(page);
  assert.equal(await page.locator(".msg.user").count(), 2);
  assert.equal(await page.locator(".msg.assistant").count(), 2);
  assert.equal(await lastAnswer(page).locator(".answer").textContent(), shown);
  await send(page, "Go on.");
  await waitIdle(page);
  assert.equal(requests[2].messages.length, 5);
  await close(t);
});

test("thinking off leaves the thinking panel empty; thinking on fills it", async () => {
  const t = await openPage({
    modify: (body) => {
      // The penalties keep a greedy random model from repeating one token.
      Object.assign(body, { ignore_eos: true, presence_penalty: 2, frequency_penalty: 2 });
      // A random-weight model never opens <think> by itself: bias it to, as api.rs does.
      if (body.enable_thinking) body.logit_bias = { [THINK_START]: 4 };
    },
  });
  const { page, requests } = t;
  await waitForModel(page);
  await page.fill("#system-prompt", "You are Kestrel, a concise assistant.");
  await setTemperature(page, 0);

  await setThinking(page, false);
  await page.fill("#max-tokens", "40");
  await send(page, "Hi! Who are you?");
  await waitIdle(page);
  assert.equal(requests[0].enable_thinking, false);
  assert.deepEqual(requests[0].messages[0], { role: "system", content: "You are Kestrel, a concise assistant." });
  const off = lastAnswer(page);
  assert.equal(await off.locator("details.thinking").isVisible(), false);
  assert.equal(await off.locator(".thinking-body").textContent(), "");
  assert.ok((await off.locator(".answer").textContent()).length > 0, "empty answer with thinking off");

  await setThinking(page, true);
  await page.fill("#max-tokens", "200");
  await send(page, "Why is the sky blue? Explain briefly.");
  const panel = lastAnswer(page).locator("details.thinking");
  // Mid-answer: the panel is open and filling while the answer still streams.
  await page.waitForFunction(() => {
    const msg = [...document.querySelectorAll(".msg.assistant")].pop();
    return msg.classList.contains("streaming") && msg.querySelector(".thinking-body").textContent.length > 0;
  });
  assert.equal(await panel.isVisible(), true);
  if (process.env.KESTREL_SCREENSHOT === "1") {
    await page.waitForFunction(() => {
      const body = [...document.querySelectorAll(".msg.assistant .thinking-body")].pop();
      return body.textContent.length > 300 || !document.body.classList.contains("busy");
    });
    await page.screenshot({ path: join(process.env.KESTREL_DOCS, "webui.png") });
  }
  await waitIdle(page);
  assert.equal(requests[1].enable_thinking, true);
  assert.equal(requests[1].messages.length, 4, "system, user, assistant, user");
  const reasoning = await panel.locator(".thinking-body").textContent();
  assert.ok(reasoning.length > 0, "empty thinking panel");
  assert.ok(!reasoning.includes("<think>"), reasoning);
  assert.match(await panel.locator("summary").textContent(), /^Thought for [\d.]+ s$/);

  await page.click("#new-chat");
  assert.equal(await page.locator(".msg").count(), 0);
  assert.equal(await page.evaluate(() => localStorage.getItem("kestrel.chat")), "[]");
  await close(t);
});

test("stop ends the stream and the server counts the request aborted", async () => {
  const t = await openPage({ modify: (body) => (body.ignore_eos = true) });
  const { page } = t;
  await waitForModel(page);
  await setThinking(page, false);
  await page.fill("#max-tokens", "3500");
  const before = await abortedCount();
  await send(page, "Count to a million.");
  await page.waitForFunction(() => [...document.querySelectorAll(".msg.assistant .answer")].pop().textContent.length > 0);
  assert.equal(await page.isVisible("#stop"), true);
  await page.click("#stop");
  await waitIdle(page);
  assert.equal(await page.isVisible("#stop"), false);
  assert.equal(await page.isVisible("#send"), true);
  assert.match(await lastAnswer(page).locator(".stats").textContent(), /stopped/);
  // The server sees the connection close and aborts the sequence: poll its counter.
  const deadline = Date.now() + 20_000;
  let now = await abortedCount();
  while (now < before + 1 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    now = await abortedCount();
  }
  assert.equal(now, before + 1, "the abort counter did not move");
  await close(t);
});

test("model output is rendered as inert text: HTML and script in an answer never run", async () => {
  const t = await openPage();
  const { page } = t;
  const payload = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>`;
  const answer =
    `Here it is: ${payload} and [a link](javascript:window.__pwned=3) and *emphasis*.\n\n` +
    "## A heading\n\n- one\n- two with `inline <b>code</b>`\n\n" +
    "```js\nconst greet = (name) => `<b>${name}</b>`; // <script>window.__pwned=4</script>\n```\n";
  const events = [delta({ role: "assistant", content: "" })];
  events.push(delta({ reasoning_content: `<img src=y onerror="window.__pwned=5">`, reasoning: `<img src=y onerror="window.__pwned=5">` }));
  events.push(
    delta({
      tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "render<svg onload=x>", arguments: "" } }],
    }),
  );
  events.push(delta({ tool_calls: [{ index: 0, function: { arguments: '{"html": "<script>window.__pwned=6</script>"}' } }] }));
  // Cut mid-tag and mid-fence, as a real stream would.
  for (let i = 0; i < answer.length; i += 17) events.push(delta({ content: answer.slice(i, i + 17) }));
  events.push(delta({ content: "" }, "stop"));
  events.push({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 42, total_tokens: 47 } });
  await page.route("**/v1/chat/completions", (route) =>
    route.fulfill({ status: 200, headers: { "content-type": "text/event-stream" }, body: sse(events) }),
  );
  await waitForModel(page);
  await send(page, "Show me some HTML.");
  await waitIdle(page);

  const msg = lastAnswer(page);
  const text = await msg.locator(".answer").textContent();
  assert.ok(text.includes(payload), text);
  assert.ok((await msg.locator(".answer").innerText()).includes(payload), "the payload is not visible as text");
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.locator("img, iframe, object, embed, svg").count(), 0);
  assert.equal(await page.evaluate(() => document.scripts.length), 1, "only app.js");
  assert.equal(await page.locator('a[href^="javascript:"]').count(), 0);
  assert.ok((await msg.locator(".thinking-body").textContent()).includes(`onerror="window.__pwned=5"`));
  assert.equal(await msg.locator(".tool-name").textContent(), "render<svg onload=x>");
  assert.ok((await msg.locator(".tool-args").textContent()).includes("<script>window.__pwned=6</script>"));
  // Markdown still renders: heading, list, emphasis, inline code, highlighted code block.
  assert.equal(await msg.locator(".answer h2").textContent(), "A heading");
  assert.equal(await msg.locator(".answer ul > li").count(), 2);
  assert.equal(await msg.locator(".answer em").textContent(), "emphasis");
  assert.equal(await msg.locator(".answer li code").textContent(), "inline <b>code</b>");
  assert.equal(await msg.locator(".code-block .code-lang").textContent(), "js");
  assert.equal(await msg.locator(".code-block .tok-kw").first().textContent(), "const");
  assert.ok((await msg.locator(".code-block .tok-com").textContent()).includes("<script>"));
  assert.match(await msg.locator(".stats").textContent(), /42 tokens/);
  await close(t);
});

test("Markdown: blocks, inline marks and code render, and a streamed answer renders as the whole", async () => {
  const t = await openPage();
  const { page } = t;
  await waitForModel(page);
  const source = [
    "# Title",
    "",
    "Some **bold**, *em*, ***both***, ~~gone~~, `a <b> c`, snake_case_name, 2 * 3 * 4, a [link](https://example.com/a_b) and https://example.org/x.",
    "",
    "3. third",
    "4. fourth",
    "   - nested *a*",
    "   - nested b",
    "",
    "5. fifth, after a blank line",
    "",
    "> quoted **text**",
    "> more",
    "",
    "| Name | Value |",
    "|:-----|------:|",
    "| a | `1` |",
    "| b \\| c | 2 |",
    "",
    "---",
    "",
    "```python",
    "def f(x):",
    '    return "s" + str(x)  # comment',
    "",
    "# still code",
    "```",
    "",
    "```",
    "plain <tag>",
    "```",
    "",
    "Last line",
    "and a break.",
  ].join("\n");
  const result = await page.evaluate((source) => {
    const whole = document.createElement("div");
    new MarkdownStream(whole).update(source, true);
    const streamed = [1, 2, 5, 13, 64].map((size) => {
      const box = document.createElement("div");
      const stream = new MarkdownStream(box);
      for (let k = size; k < source.length; k += size) stream.update(source.slice(0, k), false);
      stream.update(source, true);
      return box.innerHTML;
    });
    const q = (sel) => [...whole.querySelectorAll(sel)].map((n) => n.textContent);
    return {
      html: whole.innerHTML,
      streamed,
      h1: q("h1"),
      strong: q("strong"),
      em: q("em"),
      del: q("del"),
      inlineCode: q("p code"),
      links: [...whole.querySelectorAll("a")].map((a) => [a.textContent, a.href, a.rel]),
      ol: [...whole.querySelectorAll("ol")].map((o) => [o.start, o.children.length]),
      nested: q("ol li ul li"),
      quote: q("blockquote"),
      cells: q("td"),
      alignRight: q("td.align-right"),
      hr: whole.querySelectorAll("hr").length,
      langs: q(".code-lang"),
      pyKw: q(".code-block .tok-kw"),
      pyStr: q(".tok-str"),
      pyCom: q(".tok-com"),
      code: q("pre code"),
      brs: whole.querySelectorAll(":scope > p br").length,
    };
  }, source);
  for (const html of result.streamed) assert.equal(html, result.html);
  assert.deepEqual(result.h1, ["Title"]);
  assert.deepEqual(result.strong, ["bold", "both", "text"]);
  assert.deepEqual(result.em, ["em", "both", "a"]);
  assert.deepEqual(result.del, ["gone"]);
  assert.deepEqual(result.inlineCode, ["a <b> c"]);
  assert.ok(result.html.includes("snake_case_name, 2 * 3 * 4"), result.html);
  assert.deepEqual(result.links, [
    ["link", "https://example.com/a_b", "noopener noreferrer nofollow"],
    ["https://example.org/x", "https://example.org/x", "noopener noreferrer nofollow"],
  ]);
  assert.deepEqual(result.ol, [[3, 3]]);
  assert.deepEqual(result.nested, ["nested a", "nested b"]);
  assert.equal(result.quote.length, 1);
  assert.deepEqual(result.cells, ["a", "1", "b | c", "2"]);
  assert.deepEqual(result.alignRight, ["1", "2"]);
  assert.equal(result.hr, 1);
  assert.deepEqual(result.langs, ["python", "text"]);
  assert.deepEqual(result.pyKw, ["def", "return"]);
  assert.deepEqual(result.pyStr, ['"s"']);
  assert.deepEqual(result.pyCom, ["# comment", "# still code"]);
  assert.deepEqual(result.code[1], "plain <tag>");
  assert.equal(result.brs, 1);
  await close(t);
});

test("errors from the server are shown: an HTTP error and an in-stream error", async () => {
  let inStream = false;
  const t = await openPage({
    modify: (body) => {
      if (!inStream) body.top_p = 5; // the real server answers 400 naming the field
    },
  });
  const { page } = t;
  await waitForModel(page);
  await send(page, "Hello");
  await waitIdle(page);
  const first = lastAnswer(page).locator(".error-box");
  assert.equal(await first.isVisible(), true);
  assert.match(await first.textContent(), /top_p/);

  inStream = true;
  await page.unroute("**/v1/chat/completions");
  await page.route("**/v1/chat/completions", (route) =>
    route.fulfill({
      status: 200,
      headers: { "content-type": "text/event-stream" },
      body: sse([delta({ content: "partial answer" }), { error: { message: "the engine has stopped", code: 500 } }]),
    }),
  );
  await send(page, "Hello again");
  await waitIdle(page);
  const second = lastAnswer(page);
  assert.equal(await second.locator(".answer").textContent(), "partial answer");
  assert.equal(await second.locator(".error-box").textContent(), "the engine has stopped");
  await close(t);
});

test("the real model answers in the page (Qwen2.5-Coder-0.5B-Instruct GGUF)", async () => {
  const t = await openPage({ url: REAL });
  const { page } = t;
  await waitForModel(page, "qwen2.5-coder-0.5b-instruct");
  await setTemperature(page, 0);
  await page.fill("#max-tokens", "8");
  await send(page, "What is 2+2? Answer with one number.");
  await waitIdle(page);
  const answer = lastAnswer(page);
  assert.equal((await answer.locator(".answer").textContent()).trim(), "4");
  assert.equal(await answer.locator(".error-box").isVisible(), false);
  assert.match(await answer.locator(".stats").textContent(), /TTFT \d+ ms · .*\d+ tokens?$/);
  await close(t);
});

test("with --api-key the page asks for the key once and keeps it", async () => {
  const t = await openPage({ url: KEYED });
  const { page, context } = t;
  const dialog = page.locator("#key-dialog");
  await dialog.waitFor({ state: "visible" });
  assert.match(await page.locator("#key-reason").textContent(), /API key/);
  await page.fill("#key-input", API_KEY);
  await page.press("#key-input", "Enter");
  await waitForModel(page);
  assert.equal(await page.evaluate(() => localStorage.getItem("kestrel.apiKey")), API_KEY);

  const auth = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/v1/chat/completions")) auth.push(r.headers().authorization);
  });
  await page.fill("#max-tokens", "4");
  await send(page, "Hi");
  await waitIdle(page);
  assert.deepEqual(auth, [`Bearer ${API_KEY}`]);
  assert.equal(await lastAnswer(page).locator(".error-box").isVisible(), false);

  // A reload (same browser storage) does not ask again.
  const again = await context.newPage();
  await again.goto(KEYED);
  await waitForModel(again);
  assert.equal(await again.locator("#key-dialog").isVisible(), false);
  await close(t);
});

test("a phone-sized screen keeps everything reachable; the theme toggle switches to dark", async () => {
  const t = await openPage({ viewport: { width: 390, height: 844 } });
  const { page } = t;
  await waitForModel(page);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `the page scrolls sideways (${width}px)`);
  assert.equal(await page.isVisible("#settings-toggle"), true);
  assert.equal(await page.isVisible("#system-prompt"), false);
  await page.click("#settings-toggle");
  await page.locator("#system-prompt").waitFor({ state: "visible" });
  await page.click("#settings-toggle");
  assert.equal(await page.isVisible("#send"), true);

  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const light = await background();
  await page.click("#theme-toggle"); // auto -> light
  await page.click("#theme-toggle"); // light -> dark
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "dark");
  assert.notEqual(await background(), light);
  await close(t);
});
