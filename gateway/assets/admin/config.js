// The config page: renders every section and key of GET /v1/admin/config with a control
// that fits its value, and posts only the changed keys to POST /v1/admin/config (a deep
// merge), so hidden secrets are never sent back unless replaced.
import { api } from "/static/common/api.js";
import { $, $$, busy, copyText, el, toast } from "/static/common/ui.js";
import { startPage } from "/static/admin/shell.js";

startPage("config");

/** What the API shows in place of a secret. */
const REDACTED = new Set(["***", "********"]);

const CHOICES = {
  "app.reasoning_format": ["think_tags", "reasoning_content"],
  "app.video_format": ["html", "url", "markdown"],
  "upstream.chat_transport": ["ws", "rest"],
  "upstream.statsig_mode": ["fallback", "fixed", "signer"],
  "image.response_format": ["url", "b64_json"],
  "token.selection": ["quota", "lru"],
  "log.format": ["text", "json"],
};

/** Keys that get a "generate" button: random keys an operator hands out. */
const GENERATED = new Set(["app.api_key", "app.app_key"]);

const HINTS = {
  "app.api_key": "Client API keys, comma-separated. Named keys with limits are on the API keys page.",
  "app.app_key": "The admin key. Empty means a generated one.",
  "app.app_url": "Public base URL, used in links to generated media.",
  "app.open_api": "Serve the OpenAI-compatible API without any key.",
  "app.public_enabled": "Serve the playground pages (start at /login).",
  "upstream.cf_clearance": "Cloudflare clearance cookie; the first request must come from the same IP and user agent.",
  "retry.max_retry": "Accounts tried for one request.",
  "token.basic_quota": "Default quota of a new Basic account.",
  "token.super_quota": "Default quota of a new Super account.",
};

let original = {};

function kindOf(value) {
  if (typeof value === "boolean") return "bool";
  if (typeof value === "number") return "number";
  if (typeof value === "string") return "string";
  return "json";
}

function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function control(path, value) {
  const kind = kindOf(value);
  const id = `cfg-${path.replace(/\./g, "-")}`;
  const base = { id, dataset: { path, kind } };
  if (kind === "bool") {
    const input = el("input", { ...base, type: "checkbox" });
    input.checked = value;
    return el("label", { class: "switch" }, input, el("span", { class: "slider" }));
  }
  if (kind === "number") {
    const input = el("input", { ...base, type: "number", step: Number.isInteger(value) ? "1" : "any" });
    input.value = String(value);
    return input;
  }
  if (kind === "string" && CHOICES[path]) {
    const options = CHOICES[path].includes(value) ? CHOICES[path] : [value, ...CHOICES[path]];
    const select = el("select", base, options.map((o) => el("option", { value: o }, o)));
    select.value = value;
    return select;
  }
  if (kind === "string") {
    const secret = REDACTED.has(value);
    const input = el("input", {
      ...base,
      type: secret ? "password" : "text",
      placeholder: secret ? "set (hidden) · leave empty to keep" : "",
      autocomplete: "off",
      dataset: { path, kind, secret: secret ? "1" : "" },
    });
    input.value = secret ? "" : value;
    const parts = [input];
    if (GENERATED.has(path)) {
      parts.push(
        el("button", { class: "btn btn-sm", type: "button", onclick: () => { input.type = "text"; input.value = randomKey(); input.dispatchEvent(new Event("input", { bubbles: true })); } }, "Generate"),
        el("button", { class: "btn btn-sm", type: "button", onclick: () => input.value && copyText(input.value) }, "Copy"),
      );
    }
    return parts;
  }
  const area = el("textarea", { ...base, spellcheck: "false" });
  area.value = JSON.stringify(value, null, 2);
  return area;
}

function render(config) {
  const root = $("#config-sections");
  const sections = Object.entries(config).filter(([, v]) => v && typeof v === "object" && !Array.isArray(v));
  root.replaceChildren(
    ...sections.map(([section, fields]) =>
      el(
        "section",
        { class: "panel config-section", id: `section-${section}` },
        el("div", { class: "panel-head" }, el("h2", {}, section)),
        el(
          "div",
          { class: "config-grid" },
          Object.entries(fields).flatMap(([key, value]) => {
            const path = `${section}.${key}`;
            return [
              el("div", { class: "config-key" }, key, el("span", { class: "mono" }, path), HINTS[path] ? el("span", { class: "hint" }, HINTS[path]) : null),
              el("div", { class: "config-value", dataset: { row: path } }, control(path, value)),
            ];
          }),
        ),
      ),
    ),
  );
}

/** The value a control holds now, or throws naming the key. */
function readControl(input) {
  const { path, kind } = input.dataset;
  if (kind === "bool") return input.checked;
  if (kind === "number") {
    const n = Number(input.value);
    if (input.value.trim() === "" || !Number.isFinite(n)) throw new Error(`${path} must be a number`);
    return n;
  }
  if (kind === "string") return input.value;
  try {
    return JSON.parse(input.value);
  } catch (_) {
    throw new Error(`${path} is not valid JSON`);
  }
}

/** `{section: {key: value}}` of every changed key. */
function changes() {
  const out = {};
  for (const input of $$("[data-path][data-kind]")) {
    const { path, secret } = input.dataset;
    const [section, key] = path.split(".");
    const before = original[section][key];
    const now = readControl(input);
    if (secret && now === "") continue;
    if (JSON.stringify(now) === JSON.stringify(before)) continue;
    if (path === "app.app_key" && now === "") throw new Error("The admin key cannot be emptied here");
    (out[section] = out[section] || {})[key] = now;
  }
  return out;
}

function markChanged() {
  let pending;
  try {
    pending = changes();
  } catch (_) {
    return;
  }
  const count = Object.values(pending).reduce((n, fields) => n + Object.keys(fields).length, 0);
  $("#config-pending").textContent = count ? `${count} unsaved change${count === 1 ? "" : "s"}` : "";
  for (const row of $$("[data-row]")) {
    const [section, key] = row.dataset.row.split(".");
    const changed = Boolean(pending[section] && key in pending[section]);
    row.previousElementSibling.classList.toggle("changed", changed);
  }
}

async function load() {
  original = await api("/v1/admin/config");
  render(original);
  $("#config-error").textContent = "";
  $("#config-pending").textContent = "";
}

async function save(button) {
  const error = $("#config-error");
  error.textContent = "";
  await busy(button, async () => {
    let body;
    try {
      body = changes();
    } catch (e) {
      error.textContent = e.message;
      throw e;
    }
    if (!Object.keys(body).length) {
      toast("Nothing changed", "info");
      return;
    }
    try {
      await api("/v1/admin/config", { json: body });
    } catch (e) {
      error.textContent = e.message;
      throw e;
    }
    toast("Configuration saved", "ok");
    await load();
  });
}

$("#config-sections").addEventListener("input", markChanged);
$("#config-sections").addEventListener("change", markChanged);
$("#config-save").addEventListener("click", (e) => save(e.currentTarget));
$("#config-reload").addEventListener("click", (e) => busy(e.currentTarget, load));

load().catch((e) => toast(e.message, "error"));
