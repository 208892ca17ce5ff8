// The article's `EventSource` snippet in a real browser (Debian's Chromium, headless, driven by
// playwright-core) against `GET /api/generate` of the real `kestrel serve` binary running the
// tiny random-weight Qwen3 (tests/browser/run.sh starts the servers and sets KESTREL_URL,
// KESTREL_KEYED_URL and KESTREL_API_KEY, as for webui.test.mjs).
//
// The page is served by `page.route` on the server's own origin (EventSource is same-origin
// here, as on a page the server would host), and runs the snippet verbatim; a second `done`
// listener only marks the end for the test.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = process.env.KESTREL_URL;
const KEYED = process.env.KESTREL_KEYED_URL;
const API_KEY = process.env.KESTREL_API_KEY;
const TIMEOUT = 60_000;
// The tiny model's greedy answer to this message has newlines inside tokens.
const QUESTION = "#include";

assert.ok(BASE && KEYED && API_KEY, "run this through tests/browser/run.sh");

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
});

/** A page whose script is the article's snippet against `src` (a path and query). */
function snippetPage(src) {
  return `<!doctype html><meta charset="utf-8"><title>EventSource</title>
<pre id="out"></pre>
<script>
const out = document.getElementById("out");
const es = new EventSource(${JSON.stringify(src)});
es.onmessage = e => { out.textContent += e.data; };
es.addEventListener("done", () => es.close());
es.addEventListener("done", e => { document.body.dataset.done = e.data; document.body.dataset.state = es.readyState; });
</script>`;
}

/** Runs the snippet on `origin` against `src`; returns the page's text, the done event's data,
 * the EventSource's readyState after `done`, and how many times /api/generate was requested. */
async function runSnippet(origin, src) {
  const context = await browser.newContext();
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  let generateRequests = 0;
  page.on("request", (r) => {
    if (new URL(r.url()).pathname === "/api/generate") generateRequests += 1;
  });
  const pageUrl = new URL("/eventsource-snippet.html", origin).href;
  await page.route(pageUrl, (route) => route.fulfill({ contentType: "text/html", body: snippetPage(src) }));
  await page.goto(pageUrl);
  await page.waitForSelector("body[data-done]");
  const result = await page.evaluate(() => ({
    text: document.getElementById("out").textContent,
    done: JSON.parse(document.body.dataset.done),
    state: Number(document.body.dataset.state),
  }));
  await context.close();
  assert.deepEqual(problems, []);
  return { ...result, generateRequests };
}

/** The non-streamed greedy answer to the same message. */
async function greedyAnswer(origin, headers = {}) {
  const r = await fetch(new URL("/v1/chat/completions", origin), {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify({
      messages: [{ role: "user", content: QUESTION }],
      max_tokens: 32,
      temperature: 0,
      enable_thinking: false,
    }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).choices[0].message.content;
}

const query = `message=${encodeURIComponent(QUESTION)}&max_tokens=32&temperature=0&enable_thinking=false`;

test("the article's EventSource snippet shows the greedy answer and closes on done", async () => {
  const want = await greedyAnswer(BASE);
  assert.ok(want.includes("\n"), `the answer has newlines: ${JSON.stringify(want)}`);
  const got = await runSnippet(BASE, `/api/generate?${query}`);
  assert.equal(got.text, want.replace(/\r\n?/g, "\n"));
  assert.ok(got.done.usage.completion_tokens > 0, JSON.stringify(got.done));
  assert.equal(got.state, 2, "closed (EventSource.CLOSED) on done");
  assert.equal(got.generateRequests, 1, "no reconnect");
});

test("behind --api-key the snippet passes the key in the query", async () => {
  const want = await greedyAnswer(KEYED, { Authorization: `Bearer ${API_KEY}` });
  const got = await runSnippet(KEYED, `/api/generate?${query}&api_key=${encodeURIComponent(API_KEY)}`);
  assert.equal(got.text, want.replace(/\r\n?/g, "\n"));
  assert.equal(got.state, 2);
});
