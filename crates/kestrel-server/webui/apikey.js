// The API key: kept in local storage, asked for in the key dialog when the server answers 401,
// and forgotten with the settings' "Forget the API key" button (shown only while a key is kept).
//
// Several requests refused at once share one dialog: while it is open, every caller waits on the
// same answer.

import { $ } from "./dom.js";
import { STORE, store } from "./store.js";

/** The kept key, or null. */
export function storedKey() {
  return store.get(STORE.apiKey);
}

/** Forgets the kept key. */
export function forgetKey() {
  store.remove(STORE.apiKey);
  updateKeyButton();
}

/** Shows the "Forget the API key" button only while a key is kept. */
export function updateKeyButton() {
  $("forget-key").hidden = !storedKey();
}

/** The open dialog's answer, while one is open. */
let pendingKeyPrompt = null;

/** Asks for a key (`reason` says why); resolves to the saved key, or null if cancelled. */
export function askForKey(reason) {
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
