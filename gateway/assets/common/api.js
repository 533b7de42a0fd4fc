// The admin API client shared by the pages: the admin key lives in localStorage and is only
// ever sent as an `Authorization: Bearer` header, never in a URL.

const KEY_NAME = "grok2api_admin_key";

export function adminKey() {
  return localStorage.getItem(KEY_NAME) || "";
}

export function saveAdminKey(key) {
  localStorage.setItem(KEY_NAME, key);
}

export function forgetAdminKey() {
  localStorage.removeItem(KEY_NAME);
}

/** An error answer of the API, carrying its HTTP status and OpenAI-style message. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function headersFor(options, key) {
  const headers = new Headers(options.headers || {});
  if (key) headers.set("Authorization", `Bearer ${key}`);
  if (options.json !== undefined) headers.set("Content-Type", "application/json");
  return headers;
}

async function errorOf(response) {
  let body = null;
  let message = `${response.status} ${response.statusText}`;
  try {
    body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
    else if (body && body.detail) message = String(body.detail);
  } catch (_) {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, message, body);
}

/**
 * Calls the admin API. `options.json` is sent as the JSON body; `options.raw` returns the
 * Response itself (for downloads and streams). A 401 sends the user back to the login page.
 */
export async function api(path, options = {}) {
  const key = options.key !== undefined ? options.key : adminKey();
  const init = {
    method: options.method || (options.json !== undefined || options.body ? "POST" : "GET"),
    headers: headersFor(options, key),
    body: options.json !== undefined ? JSON.stringify(options.json) : options.body,
    signal: options.signal,
    cache: "no-store",
  };
  const response = await fetch(path, init);
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !options.noRedirect) {
      forgetAdminKey();
      location.assign("/admin/login");
    }
    throw error;
  }
  if (options.raw) return response;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("application/json") ? response.json() : response.text();
}

/**
 * Reads a Server-Sent Events stream with fetch (so the admin key travels in a header, which
 * EventSource cannot do) and calls `onEvent` with each parsed `data:` payload. Resolves when
 * the stream ends; `signal` aborts it.
 */
export async function streamEvents(path, onEvent, signal) {
  const response = await api(path, { raw: true, signal });
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
      if (!data) continue;
      let parsed;
      try {
        parsed = JSON.parse(data);
      } catch (_) {
        continue;
      }
      onEvent(parsed);
    }
  }
}

/** Saves a Blob as a file through a temporary link. */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The file name a Content-Disposition header gives, or `fallback`. */
export function dispositionName(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/i.exec(header);
  return plain ? plain[1] : fallback;
}
