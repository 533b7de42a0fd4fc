// The cache page: local images and videos (preview, download one or a ZIP of several,
// delete, clear), and each account's online assets (load counts, clear) as batches with
// live progress.
import { api, dispositionName, saveBlob } from "/static/common/api.js";
import { $, $$, busy, el, formatBytes, formatTime, openModal, toast } from "/static/common/ui.js";
import { startPage } from "/static/admin/shell.js";
import { runBatch } from "/static/admin/batch.js";

startPage("cache");

const PAGE_SIZE = 500;

const state = {
  type: "image",
  items: [],
  total: 0,
  selected: new Set(),
  accounts: [],
  online: {},
  onlineSelected: new Set(),
};

async function loadStats() {
  const stats = await api("/v1/admin/cache");
  $("#stat-images").textContent = stats.local_image?.count ?? 0;
  $("#stat-images-size").textContent = `${stats.local_image?.size_mb ?? 0} MB`;
  $("#stat-videos").textContent = stats.local_video?.count ?? 0;
  $("#stat-videos-size").textContent = `${stats.local_video?.size_mb ?? 0} MB`;
  state.accounts = stats.online_accounts || [];
  renderOnline();
}

async function loadList() {
  const answer = await api(`/v1/admin/cache/list?type=${state.type}&page=1&page_size=${PAGE_SIZE}`);
  state.items = answer.items || [];
  state.total = answer.total || 0;
  const names = new Set(state.items.map((i) => i.name));
  for (const name of state.selected) if (!names.has(name)) state.selected.delete(name);
  renderMedia();
}

async function loadAll() {
  await Promise.all([loadStats(), loadList()]);
}

function renderMedia() {
  const grid = $("#media-grid");
  const more = state.total > state.items.length ? ` (showing the newest ${state.items.length})` : "";
  const noun = `${state.type}${state.total === 1 ? "" : "s"}`;
  $("#media-info").textContent = `${state.total} ${noun}${more}${state.selected.size ? ` · ${state.selected.size} selected` : ""}`;
  $("#media-select-all").checked = state.items.length > 0 && state.selected.size === state.items.length;
  if (!state.items.length) {
    grid.replaceChildren(el("p", { class: "empty" }, `No cached ${state.type === "image" ? "images" : "videos"}.`));
    return;
  }
  grid.replaceChildren(...state.items.map(card));
}

function card(item) {
  const check = el("input", {
    type: "checkbox",
    class: "media-select",
    "aria-label": `Select ${item.name}`,
    onchange: (e) => {
      if (e.target.checked) state.selected.add(item.name);
      else state.selected.delete(item.name);
      renderMedia();
    },
  });
  check.checked = state.selected.has(item.name);
  const preview =
    state.type === "image"
      ? el("img", { src: item.view_url, alt: item.name, loading: "lazy" })
      : el("video", { src: item.view_url, preload: "metadata", muted: true });
  return el(
    "div",
    { class: `media-card${state.selected.has(item.name) ? " selected" : ""}`, dataset: { name: item.name } },
    el("div", { class: "media-thumb", title: "Preview", onclick: () => preview_(item) }, preview),
    el(
      "div",
      { class: "media-meta" },
      el("span", { class: "media-name mono", title: item.name }, item.name),
      el("span", { class: "muted" }, `${formatBytes(item.size_bytes)} · ${formatTime(item.mtime_ms)}`),
      el(
        "div",
        { class: "media-actions" },
        check,
        el("span", { class: "grow" }),
        el("button", { class: "btn btn-icon media-view", onclick: () => preview_(item) }, "View"),
        el("button", { class: "btn btn-icon media-download-one", onclick: (e) => download(e.currentTarget, [item.name]) }, "Download"),
        el("button", { class: "btn btn-icon btn-danger media-delete-one", onclick: (e) => remove(e.currentTarget, [item.name]) }, "Delete"),
      ),
    ),
  );
}

function preview_(item) {
  $("#lightbox-name").textContent = item.name;
  const body =
    state.type === "image"
      ? el("img", { src: item.view_url, alt: item.name })
      : el("video", { src: item.view_url, controls: true, autoplay: true, playsinline: true });
  $("#lightbox-body").replaceChildren(body);
  const dialog = openModal("lightbox");
  dialog.addEventListener("close", () => $("#lightbox-body").replaceChildren(), { once: true });
}

async function download(button, names) {
  if (!names.length) {
    toast("Select files first", "info");
    return;
  }
  await busy(button, async () => {
    const response = await api("/v1/admin/cache/download", { json: { type: state.type, names }, raw: true });
    const blob = await response.blob();
    const fallback = names.length === 1 ? names[0] : `${state.type}.zip`;
    saveBlob(blob, dispositionName(response, fallback));
    toast(names.length === 1 ? "Download started" : `Downloading ${names.length} files as ZIP`, "ok");
  });
}

async function remove(button, names) {
  if (!names.length) {
    toast("Select files first", "info");
    return;
  }
  if (!confirm(`Delete ${names.length} file${names.length === 1 ? "" : "s"}?`)) return;
  await busy(button, async () => {
    let deleted = 0;
    for (const name of names) {
      const answer = await api("/v1/admin/cache/item/delete", { json: { type: state.type, name } });
      if (answer.result?.deleted) deleted += 1;
      state.selected.delete(name);
    }
    toast(`Deleted ${deleted}`, "ok");
    await loadAll();
  });
}

async function clearAll(button) {
  if (!confirm(`Delete every cached ${state.type}?`)) return;
  await busy(button, async () => {
    const answer = await api("/v1/admin/cache/clear", { json: { type: state.type } });
    const count = answer.result?.count ?? 0;
    toast(`Cleared ${count} file${count === 1 ? "" : "s"} (${answer.result?.size_mb ?? 0} MB)`, "ok");
    state.selected.clear();
    await loadAll();
  });
}

function renderOnline() {
  const rows = $("#online-rows");
  const known = new Set(state.accounts.map((a) => a.id || a.token));
  for (const id of state.onlineSelected) if (!known.has(id)) state.onlineSelected.delete(id);
  let total = 0;
  let loaded = false;
  for (const r of Object.values(state.online)) {
    if (Number.isFinite(r.count)) {
      total += r.count;
      loaded = true;
    }
  }
  $("#stat-online").textContent = loaded ? total : "-";
  $("#stat-online-status").textContent = loaded ? "loaded" : "not loaded";
  if (!state.accounts.length) {
    rows.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No accounts.")));
    return;
  }
  rows.replaceChildren(
    ...state.accounts.map((a) => {
      const id = a.id || a.token;
      const result = state.online[id];
      const check = el("input", {
        type: "checkbox",
        class: "online-select",
        onchange: (e) => {
          if (e.target.checked) state.onlineSelected.add(id);
          else state.onlineSelected.delete(id);
        },
      });
      check.checked = state.onlineSelected.has(id);
      const type = a.pool === "ssoSuper" ? "super" : "basic";
      return el(
        "tr",
        { dataset: { id } },
        el("td", {}, check),
        el("td", {}, el("span", { class: "mono" }, a.token_masked || id)),
        el("td", {}, el("span", { class: `badge badge-${type}` }, type === "super" ? "Super" : "Basic")),
        el("td", {}, el("span", { class: `badge badge-${a.status}` }, a.status)),
        el("td", { class: "online-count" }, result && Number.isFinite(result.count) ? result.count : "-"),
        el("td", { class: "muted" }, result ? result.text : ""),
        el("td", { class: "actions" }, el("button", { class: "btn btn-icon btn-danger", onclick: (e) => clearOnline(e.currentTarget, [id]) }, "Clear")),
      );
    }),
  );
}

/** Reads a finished batch's per-account results into `state.online`. */
function absorb(last, clearing) {
  const results = last?.result?.results || {};
  for (const [id, r] of Object.entries(results)) {
    const ok = r && (r.success === true || r.status === "ok" || r.status === "success");
    const entry = state.online[id] || {};
    if (!clearing && Number.isFinite(r?.count)) entry.count = r.count;
    if (clearing && ok) entry.count = 0;
    entry.text = ok ? (clearing ? "cleared" : "loaded") : `error: ${r?.error || "failed"}`;
    state.online[id] = entry;
  }
  renderOnline();
}

async function loadOnline(button, ids) {
  await busy(button, async () => {
    const body = ids ? { tokens: ids } : { scope: "all" };
    if (ids && !ids.length) {
      toast("Select accounts first", "info");
      return;
    }
    const last = await runBatch("Loading online assets", "/v1/admin/cache/online/load/async", body);
    absorb(last, false);
  });
}

async function clearOnline(button, ids) {
  if (!ids.length) {
    toast("Select accounts first", "info");
    return;
  }
  if (!confirm(`Delete every online asset of ${ids.length} account${ids.length === 1 ? "" : "s"}?`)) return;
  await busy(button, async () => {
    const last = await runBatch("Clearing online assets", "/v1/admin/cache/online/clear/async", { tokens: ids });
    absorb(last, true);
  });
}

for (const tab of $$(".tab[data-type]")) {
  tab.addEventListener("click", () => {
    state.type = tab.dataset.type;
    state.selected.clear();
    for (const t of $$(".tab[data-type]")) t.classList.toggle("active", t === tab);
    loadAll().catch((e) => toast(e.message, "error"));
  });
}
$("#media-select-all").addEventListener("change", (e) => {
  state.selected = new Set(e.target.checked ? state.items.map((i) => i.name) : []);
  renderMedia();
});
$("#media-download").addEventListener("click", (e) => download(e.currentTarget, [...state.selected]));
$("#media-delete").addEventListener("click", (e) => remove(e.currentTarget, [...state.selected]));
$("#media-clear").addEventListener("click", (e) => clearAll(e.currentTarget));
$("#cache-reload").addEventListener("click", (e) => busy(e.currentTarget, loadAll));
$("#online-select-all").addEventListener("change", (e) => {
  state.onlineSelected = new Set(e.target.checked ? state.accounts.map((a) => a.id || a.token) : []);
  renderOnline();
});
$("#online-load-all").addEventListener("click", (e) => loadOnline(e.currentTarget, null));
$("#online-load-selected").addEventListener("click", (e) => loadOnline(e.currentTarget, [...state.onlineSelected]));
$("#online-clear-selected").addEventListener("click", (e) => clearOnline(e.currentTarget, [...state.onlineSelected]));

loadAll().catch((e) => toast(e.message, "error"));
