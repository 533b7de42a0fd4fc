// The token page: lists the pool's accounts with filters, pagination and selection; adds,
// edits, imports, exports and deletes tokens; runs refresh and NSFW batches with live
// progress. Tokens arrive masked with an `id`; the page names tokens by that id.
import { api, saveBlob } from "/static/common/api.js";
import { $, $$, busy, closeModal, el, openModal, toast } from "/static/common/ui.js";
import { startPage } from "/static/admin/shell.js";
import { runBatch } from "/static/admin/batch.js";

startPage("token");

const POOLS = { ssoBasic: "Basic", ssoSuper: "Super" };
const DEFAULT_QUOTA = { ssoBasic: 80, ssoSuper: 140 };

const FILTERS = [
  ["all", "All", () => true],
  ["active", "Active", (t) => t.status === "active"],
  ["cooling", "Cooling", (t) => t.status === "cooling"],
  ["invalid", "Invalid", (t) => t.status !== "active" && t.status !== "cooling"],
  ["basic", "Basic", (t) => t.pool === "ssoBasic"],
  ["super", "Super", (t) => t.pool === "ssoSuper"],
  ["nsfw", "NSFW on", (t) => hasNsfw(t)],
  ["nonsfw", "NSFW off", (t) => !hasNsfw(t)],
];

const state = {
  tokens: [],
  filter: "all",
  page: 1,
  pageSize: 50,
  selected: new Set(),
  editing: null,
};

function hasNsfw(t) {
  return Array.isArray(t.tags) && t.tags.includes("nsfw");
}

function filtered() {
  const test = FILTERS.find(([id]) => id === state.filter)[2];
  return state.tokens.filter(test);
}

async function load() {
  const data = await api("/v1/admin/tokens");
  state.tokens = Object.entries(data)
    .filter(([, list]) => Array.isArray(list))
    .flatMap(([pool, list]) => list.map((t) => ({ ...t, pool })));
  const known = new Set(state.tokens.map((t) => t.id));
  for (const id of state.selected) if (!known.has(id)) state.selected.delete(id);
  render();
}

function render() {
  renderStats();
  renderTabs();
  renderRows();
  renderSelection();
}

function renderStats() {
  const all = state.tokens;
  const active = all.filter((t) => t.status === "active");
  const chat = active.reduce((sum, t) => sum + (Number(t.quota) || 0), 0);
  $("#stat-total").textContent = all.length;
  $("#stat-active").textContent = active.length;
  $("#stat-cooling").textContent = all.filter((t) => t.status === "cooling").length;
  $("#stat-invalid").textContent = all.filter((t) => t.status !== "active" && t.status !== "cooling").length;
  $("#stat-chat").textContent = chat;
  $("#stat-image").textContent = Math.floor(chat / 2);
  $("#stat-calls").textContent = all.reduce((sum, t) => sum + (Number(t.use_count) || 0), 0);
}

function renderTabs() {
  const tabs = $("#tabs");
  tabs.replaceChildren(
    ...FILTERS.map(([id, label, test]) =>
      el(
        "button",
        {
          class: `tab${state.filter === id ? " active" : ""}`,
          role: "tab",
          dataset: { filter: id },
          onclick: () => {
            state.filter = id;
            state.page = 1;
            render();
          },
        },
        label,
        el("span", { class: "count" }, state.tokens.filter(test).length),
      ),
    ),
  );
}

function statusBadges(t) {
  const badges = [el("span", { class: `badge badge-${t.status}` }, t.status)];
  if (hasNsfw(t)) badges.push(el("span", { class: "badge badge-nsfw" }, "nsfw"));
  return badges;
}

function renderRows() {
  const rows = filtered();
  const pages = Math.max(1, Math.ceil(rows.length / state.pageSize));
  state.page = Math.min(state.page, pages);
  const start = (state.page - 1) * state.pageSize;
  const pageRows = rows.slice(start, start + state.pageSize);
  const body = $("#token-rows");
  if (!pageRows.length) {
    body.replaceChildren(
      el("tr", {}, el("td", { colspan: 8, class: "empty" }, state.tokens.length ? "No token matches this filter." : "No tokens yet. Add or import some.")),
    );
  } else {
    body.replaceChildren(...pageRows.map(row));
  }
  $("#page-info").textContent = `Page ${state.page} of ${pages} · ${rows.length} tokens`;
  $("#page-prev").disabled = state.page <= 1;
  $("#page-next").disabled = state.page >= pages;
  const pageIds = pageRows.map((t) => t.id);
  $("#select-page").checked = pageIds.length > 0 && pageIds.every((id) => state.selected.has(id));
}

function row(t) {
  const check = el("input", {
    type: "checkbox",
    class: "row-select",
    "aria-label": "Select",
    onchange: (e) => {
      if (e.target.checked) state.selected.add(t.id);
      else state.selected.delete(t.id);
      renderSelection();
    },
  });
  check.checked = state.selected.has(t.id);
  const type = t.pool === "ssoSuper" ? "super" : "basic";
  return el(
    "tr",
    { dataset: { id: t.id, pool: t.pool } },
    el("td", {}, check),
    el("td", {}, el("span", { class: "mono token-masked", title: `id ${t.id}` }, t.token)),
    el("td", {}, el("span", { class: `badge badge-${type}` }, POOLS[t.pool] || t.pool)),
    el("td", { class: "status" }, statusBadges(t)),
    el("td", { class: "quota" }, t.quota),
    el("td", {}, t.use_count || 0),
    el("td", { class: "note" }, t.note || ""),
    el(
      "td",
      { class: "actions" },
      el("button", { class: "btn btn-icon row-refresh", title: "Refresh quota", onclick: (e) => refreshOne(e.currentTarget, t) }, "Refresh"),
      " ",
      el("button", { class: "btn btn-icon row-edit", title: "Edit", onclick: () => openEdit(t) }, "Edit"),
      " ",
      el("button", { class: "btn btn-icon btn-danger row-delete", title: "Delete", onclick: (e) => deleteTokens(e.currentTarget, [t.id]) }, "Delete"),
    ),
  );
}

function renderSelection() {
  const n = state.selected.size;
  $("#batchbar").classList.toggle("hidden", n === 0);
  $("#batch-count").textContent = `${n} selected`;
  $("#selection-info").textContent = n ? `${n} selected` : "";
}

/** Posts the whole token set (the API replaces it), built from a fresh list. */
async function replaceAll(transform) {
  const data = await api("/v1/admin/tokens");
  const pools = { ssoBasic: [], ssoSuper: [] };
  for (const [pool, list] of Object.entries(data)) {
    if (!Array.isArray(list)) continue;
    pools[pool] = list.map((t) => ({ id: t.id }));
  }
  transform(pools);
  await api("/v1/admin/tokens", { json: pools });
}

async function refreshOne(button, t) {
  await busy(button, async () => {
    const answer = await api("/v1/admin/tokens/refresh", { json: { token: t.id } });
    const ok = answer.results && answer.results[t.id];
    toast(ok ? "Refreshed" : "Refresh failed", ok ? "ok" : "error");
    await load();
  });
}

async function deleteTokens(button, ids) {
  if (!confirm(`Delete ${ids.length} token${ids.length === 1 ? "" : "s"}?`)) return;
  await busy(button, async () => {
    const gone = new Set(ids);
    await replaceAll((pools) => {
      for (const pool of Object.keys(pools)) pools[pool] = pools[pool].filter((e) => !gone.has(e.id));
    });
    for (const id of ids) state.selected.delete(id);
    toast(`Deleted ${ids.length}`, "ok");
    await load();
  });
}

function openAdd() {
  state.editing = null;
  $("#edit-title").textContent = "Add token";
  const token = $("#edit-token");
  token.value = "";
  token.disabled = false;
  $("#edit-token-hint").textContent = "A leading sso= is removed.";
  $("#edit-pool").value = "ssoBasic";
  $("#edit-quota").value = DEFAULT_QUOTA.ssoBasic;
  $("#edit-quota").disabled = false;
  $("#edit-quota-hint").textContent = "Starting quota of the new account.";
  $("#edit-note").value = "";
  $("#edit-error").textContent = "";
  openModal("edit-modal");
  token.focus();
}

function openEdit(t) {
  state.editing = t;
  $("#edit-title").textContent = "Edit token";
  const token = $("#edit-token");
  token.value = t.token;
  token.disabled = true;
  $("#edit-token-hint").textContent = "The token itself cannot be changed; add a new one instead.";
  $("#edit-pool").value = t.pool in POOLS ? t.pool : "ssoBasic";
  // Saving sets the live quota; usage counts it down and Refresh re-reads it from upstream.
  const quota = $("#edit-quota");
  quota.value = t.quota;
  quota.disabled = false;
  $("#edit-quota-hint").textContent = "Quota left now; usage counts it down and Refresh re-reads it.";
  $("#edit-note").value = t.note || "";
  $("#edit-error").textContent = "";
  openModal("edit-modal");
}

async function saveEdit(event) {
  event.preventDefault();
  const pool = $("#edit-pool").value;
  const quota = Number.parseInt($("#edit-quota").value, 10);
  const note = $("#edit-note").value.trim().slice(0, 50);
  const error = $("#edit-error");
  error.textContent = "";
  if (!Number.isInteger(quota) || quota < 0) {
    error.textContent = "Quota is a whole number, 0 or more.";
    return;
  }
  const button = $("#edit-save");
  button.disabled = true;
  try {
    if (state.editing) {
      await api(`/v1/admin/tokens/${encodeURIComponent(state.editing.id)}`, {
        method: "PATCH",
        json: quota === Number(state.editing.quota) ? { pool, note } : { pool, note, quota },
      });
      toast("Saved", "ok");
    } else {
      const token = $("#edit-token").value.trim();
      if (!token) {
        error.textContent = "Enter a token.";
        return;
      }
      await replaceAll((pools) => {
        (pools[pool] = pools[pool] || []).push({ token, quota, note });
      });
      toast("Token added", "ok");
    }
    closeModal("edit-modal");
    await load();
  } catch (e) {
    error.textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

async function saveImport(event) {
  event.preventDefault();
  const text = $("#import-text").value;
  const error = $("#import-error");
  error.textContent = "";
  if (!text.trim()) {
    error.textContent = "Paste at least one token.";
    return;
  }
  const button = $("#import-save");
  button.disabled = true;
  try {
    const answer = await api("/v1/admin/tokens/import", { json: { pool: $("#import-pool").value, text } });
    toast(`Imported ${answer.added ?? 0}, skipped ${answer.skipped ?? 0}`, "ok");
    $("#import-text").value = "";
    closeModal("import-modal");
    await load();
  } catch (e) {
    error.textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

async function exportTokens(button, ids) {
  await busy(button, async () => {
    const text = await api("/v1/admin/tokens/export");
    let lines = String(text).split("\n").filter(Boolean);
    if (ids) {
      if (!(window.crypto && crypto.subtle)) {
        throw new Error("Exporting a selection needs HTTPS or localhost; use Export all instead.");
      }
      const wanted = new Set(ids);
      const keep = [];
      for (const line of lines) if (wanted.has(await sha256(line))) keep.push(line);
      lines = keep;
    }
    saveBlob(new Blob([lines.join("\n") + "\n"], { type: "text/plain" }), "tokens.txt");
    toast(`Exported ${lines.length}`, "ok");
  });
}

async function sha256(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function batch(button, title, path, ids) {
  await busy(button, async () => {
    const body = ids ? { tokens: ids } : {};
    if (!ids && path.includes("refresh")) body.tokens = state.tokens.map((t) => t.id);
    if (body.tokens && !body.tokens.length) {
      toast("No tokens", "info");
      return;
    }
    const last = await runBatch(title, path, body);
    if (last && last.type === "done") toast(`${title}: ${last.ok} ok, ${last.fail} failed`, last.fail ? "error" : "ok");
    await load();
  });
}

$("#reload").addEventListener("click", (e) => busy(e.currentTarget, load));
$("#open-add").addEventListener("click", openAdd);
$("#open-import").addEventListener("click", () => {
  $("#import-error").textContent = "";
  openModal("import-modal");
});
$("#edit-pool").addEventListener("change", (e) => {
  if (!state.editing) $("#edit-quota").value = DEFAULT_QUOTA[e.target.value] ?? 80;
});
$("#edit-form").addEventListener("submit", saveEdit);
$("#import-form").addEventListener("submit", saveImport);
$("#export-all").addEventListener("click", (e) => exportTokens(e.currentTarget, null));
$("#batch-export").addEventListener("click", (e) => exportTokens(e.currentTarget, [...state.selected]));
$("#refresh-all").addEventListener("click", (e) => batch(e.currentTarget, "Refreshing all tokens", "/v1/admin/tokens/refresh/async", null));
$("#batch-refresh").addEventListener("click", (e) => batch(e.currentTarget, "Refreshing selected tokens", "/v1/admin/tokens/refresh/async", [...state.selected]));
$("#nsfw-all").addEventListener("click", (e) => batch(e.currentTarget, "Enabling NSFW for all tokens", "/v1/admin/tokens/nsfw/enable/async", null));
$("#batch-nsfw").addEventListener("click", (e) => batch(e.currentTarget, "Enabling NSFW for selected tokens", "/v1/admin/tokens/nsfw/enable/async", [...state.selected]));
$("#batch-delete").addEventListener("click", (e) => deleteTokens(e.currentTarget, [...state.selected]));
$("#select-page").addEventListener("change", (e) => {
  const rows = $$("#token-rows tr[data-id]");
  for (const r of rows) {
    if (e.target.checked) state.selected.add(r.dataset.id);
    else state.selected.delete(r.dataset.id);
  }
  renderRows();
  renderSelection();
});
$("#select-filtered").addEventListener("click", () => {
  for (const t of filtered()) state.selected.add(t.id);
  renderRows();
  renderSelection();
});
$("#select-none").addEventListener("click", () => {
  state.selected.clear();
  renderRows();
  renderSelection();
});
$("#page-size").addEventListener("change", (e) => {
  state.pageSize = Number(e.target.value);
  state.page = 1;
  renderRows();
});
$("#page-prev").addEventListener("click", () => {
  state.page -= 1;
  renderRows();
});
$("#page-next").addEventListener("click", () => {
  state.page += 1;
  renderRows();
});

load().catch((e) => toast(e.message, "error"));
