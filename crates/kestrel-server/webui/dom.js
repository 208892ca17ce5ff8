// DOM helpers shared by the page's modules: element lookup by id, element creation with text
// content, and copying text to the clipboard.
//
// `el` is how every module puts text into the page: the text goes in as `textContent`, so model
// output handed to it is shown as the text it is, never parsed as markup.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** A new `tag` element with an optional class and text content. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

/** Copies `text` and says so on `button` for a moment. */
export async function copyText(text, button) {
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
