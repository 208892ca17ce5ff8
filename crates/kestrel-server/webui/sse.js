// Talking to the server: `fetch` with the kept API key (a 401 asks for a key and tries again),
// the OpenAI error JSON turned into a message, and the SSE reader that splits a streamed
// `POST v1/chat/completions` body into events, one batch per network read so the page renders
// once per read.
//
// The page talks only to its own origin (relative paths, `connect-src 'self'`).

import { askForKey, storedKey } from "./apikey.js";

/** An error the server reported (or the stream ended early); its message is shown as is. */
export class ApiError extends Error {}

export async function errorMessage(response) {
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
export async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = storedKey();
    if (key) headers.set("Authorization", "Bearer " + key);
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401) return response;
    const reason = await errorMessage(response);
    if (!(await askForKey(key ? `The server refused the stored key: ${reason}` : `This server needs an API key (${reason}).`))) {
      throw new ApiError(reason);
    }
  }
}

/** The SSE events of a response body, in batches: one batch per network read. */
export async function* sseBatches(response) {
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
