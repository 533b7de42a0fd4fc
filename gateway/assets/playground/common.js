// Shared by the playground pages: the public key (kept in localStorage, sent only as an
// `Authorization: Bearer` header), calls to /v1/public/*, SSE reading and the top bar.

import { el, $ } from "/static/common/ui.js";

const KEY_NAME = "grok2api_public_key";

export function publicKey() {
  return localStorage.getItem(KEY_NAME) || "";
}

export function savePublicKey(key) {
  if (key) localStorage.setItem(KEY_NAME, key);
  else localStorage.removeItem(KEY_NAME);
}

/** An error answer of the API with its status and message. */
export class PublicError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch (_) {
    // Not JSON: keep the status line.
  }
  return new PublicError(response.status, message, code);
}

/**
 * Calls a public route. `options.json` is sent as JSON, `options.form` as multipart;
 * `options.raw` returns the Response (for streams). A 401 leads back to /login.
 */
export async function pub(path, options = {}) {
  const headers = new Headers();
  const key = publicKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let body;
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(options.json);
  } else if (options.form) {
    body = options.form;
  }
  const response = await fetch(path, {
    method: options.method || (body ? "POST" : "GET"),
    headers,
    body,
    signal: options.signal,
    cache: "no-store",
  });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !options.noRedirect) location.assign("/login");
    throw error;
  }
  return options.raw ? response : response.json();
}

/** Reads an SSE response, calling `onData` with each raw `data:` payload (a string). */
export async function readSse(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = frame
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) onData(data);
    }
  }
}

const PAGES = [
  ["/chat", "Chat"],
  ["/imagine", "Imagine"],
  ["/video", "Video"],
  ["/voice", "Voice"],
];

/** Renders the top bar into `#topbar` and checks the stored key still works. */
export async function shell() {
  const bar = $("#topbar");
  if (bar) {
    const nav = el(
      "nav",
      { class: "nav" },
      PAGES.map(([href, label]) =>
        el("a", { href, class: location.pathname === href ? "active" : "", id: `nav-${label.toLowerCase()}` }, label),
      ),
    );
    const out = el("button", { class: "btn btn-sm", id: "sign-out", onclick: () => { savePublicKey(""); location.assign("/login"); } }, "Sign out");
    bar.append(el("div", { class: "topbar-inner" }, el("span", { class: "brand" }, "grok2api playground"), nav, el("span", { class: "grow" }), out));
  }
  try {
    await pub("/v1/public/verify");
  } catch (e) {
    if (e.status !== 401) throw e;
  }
}

/** Reads a File as a `data:` URI. */
export function dataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Starts a download of `url` as `name`. */
export function download(url, name) {
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
}
