// The client API keys page: create (the key is shown once), list with usage, disable and
// revoke, through /v1/admin/keys.
import { api } from "/static/common/api.js";
import { $, busy, copyText, el, formatTime, toast } from "/static/common/ui.js";
import { startPage } from "/static/admin/shell.js";

startPage("keys");

async function load() {
  const answer = await api("/v1/admin/keys");
  const items = answer.items || [];
  const rows = $("#key-rows");
  if (!items.length) {
    rows.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No keys yet.")));
    return;
  }
  rows.replaceChildren(...items.map(row));
}

function row(k) {
  const models = k.models && k.models.length ? k.models.join(", ") : "all";
  return el(
    "tr",
    { dataset: { id: k.id } },
    el("td", { class: "key-name" }, k.name),
    el("td", {}, el("span", { class: "mono" }, `${k.prefix}…`)),
    el("td", {}, models),
    el("td", {}, k.rate_limit_per_minute ? k.rate_limit_per_minute : "none"),
    el("td", { class: "key-requests" }, k.request_count ?? 0),
    el("td", {}, formatTime(k.created_at)),
    el("td", {}, formatTime(k.last_used_at)),
    el("td", {}, el("span", { class: `badge ${k.enabled ? "badge-active" : "badge-disabled"}` }, k.enabled ? "enabled" : "disabled")),
    el(
      "td",
      { class: "actions" },
      el("button", { class: "btn btn-icon key-toggle", onclick: (e) => toggle(e.currentTarget, k) }, k.enabled ? "Disable" : "Enable"),
      " ",
      el("button", { class: "btn btn-icon btn-danger key-revoke", onclick: (e) => revoke(e.currentTarget, k) }, "Revoke"),
    ),
  );
}

async function toggle(button, k) {
  await busy(button, async () => {
    await api(`/v1/admin/keys/${encodeURIComponent(k.id)}`, { method: "PATCH", json: { enabled: !k.enabled } });
    toast(k.enabled ? "Key disabled" : "Key enabled", "ok");
    await load();
  });
}

async function revoke(button, k) {
  if (!confirm(`Revoke the key "${k.name}"? Clients using it stop working.`)) return;
  await busy(button, async () => {
    await api(`/v1/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
    toast("Key revoked", "ok");
    await load();
  });
}

$("#key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $("#key-error");
  error.textContent = "";
  const models = $("#key-models")
    .value.split(",")
    .map((m) => m.trim())
    .filter(Boolean);
  const rate = Number.parseInt($("#key-rate").value || "0", 10);
  const body = { name: $("#key-name").value.trim(), models, rate_limit_per_minute: Number.isFinite(rate) ? rate : 0 };
  const button = $("#key-create");
  button.disabled = true;
  try {
    const answer = await api("/v1/admin/keys", { json: body });
    $("#key-value").textContent = answer.key;
    $("#key-created").classList.remove("hidden");
    $("#key-form").reset();
    await load();
  } catch (e) {
    error.textContent = e.message;
  } finally {
    button.disabled = false;
  }
});
$("#key-copy").addEventListener("click", () => copyText($("#key-value").textContent));
$("#key-dismiss").addEventListener("click", () => {
  $("#key-value").textContent = "";
  $("#key-created").classList.add("hidden");
});
$("#keys-reload").addEventListener("click", (e) => busy(e.currentTarget, load));

load().catch((e) => toast(e.message, "error"));
