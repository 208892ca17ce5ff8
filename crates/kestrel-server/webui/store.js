// The browser's local storage as the page uses it: the keys it keeps (API key, settings, theme,
// the conversation) and a wrapper that never throws, because storage is optional (private
// windows, disabled storage) and the page must work without it.

export const STORE = {
  apiKey: "kestrel.apiKey",
  settings: "kestrel.settings",
  theme: "kestrel.theme",
  chat: "kestrel.chat",
};

/** localStorage that never throws (private windows, disabled storage). */
export const store = {
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
