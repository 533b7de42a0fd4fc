// Small DOM helpers shared by the pages: element building, toasts, modals, formatting.

/** Builds an element: `el("button", {class: "btn", onclick: f}, "Save")`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

function toastBox() {
  let box = $("#toasts");
  if (!box) {
    box = el("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  return box;
}

/** Shows a short message; `kind` is "ok", "error" or "info". */
export function toast(message, kind = "info") {
  const item = el("div", { class: `toast toast-${kind}` }, message);
  toastBox().append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** Opens the `<dialog>` with `id`; returns it. */
export function openModal(id) {
  const dialog = document.getElementById(id);
  if (!dialog.open) dialog.showModal();
  return dialog;
}

export function closeModal(id) {
  const dialog = document.getElementById(id);
  if (dialog.open) dialog.close();
}

/** Wires every `[data-close]` button to close its dialog. */
export function wireModals() {
  for (const button of $$("[data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "-";
  const units = ["B", "KB", "MB", "GB"];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatTime(ms) {
  if (!ms) return "-";
  return new Date(ms).toLocaleString();
}

/** Copies text to the clipboard, falling back to a hidden textarea outside secure contexts. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const area = el("textarea", { class: "offscreen" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied", "ok");
}

/** Runs `fn` with `button` disabled, showing errors as toasts. */
export async function busy(button, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    toast(e.message || String(e), "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}
