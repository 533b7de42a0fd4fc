// The Video page. Each video is a public video task: POST /v1/public/video/start, then its
// chat-chunk stream from /v1/public/video/sse (progress lines, the video at the end).
// Single mode makes one video and keeps a history; waterfall mode keeps 1 to 3 running until
// stopped. Stop is graceful (running videos finish); pressing it again cancels them.

import { el, $, $$, toast, wireModals, openModal } from "/static/common/ui.js";
import { pub, readSse, shell, dataUri, download } from "/static/playground/common.js";

const HISTORY_KEY = "grok2api_video_history";
const WF_KEY = "grok2api_wf_items";
const MAX_HISTORY = 50;
let mode = "single";
let refImage = null;
let running = new Map();
let stopping = false;
let lightboxIndex = 0;

function load(key) {
  try { return JSON.parse(localStorage.getItem(key) || "[]"); } catch (_) { return []; }
}

function save(key, items) {
  localStorage.setItem(key, JSON.stringify(items.slice(0, MAX_HISTORY)));
}

function params() {
  const body = {
    prompt: $("#prompt").value.trim(),
    aspect_ratio: $("#ratio").value,
    video_length: Number($("#length").value),
    resolution_name: $("#resolution").value,
    preset: $("#preset").value,
  };
  if (refImage) body.image_url = refImage;
  return body;
}

/** The video address in an answer: an HTML `<video>` source, or a bare URL. */
function videoSource(content) {
  const html = /<source[^>]*src="([^"]+)"|<video[^>]*src="([^"]+)"/.exec(content);
  if (html) return html[1] || html[2];
  const url = /(https?:\/\/\S+\.mp4|\/v1\/files\/video\/\S+\.mp4)/.exec(content);
  return url ? url[1] : null;
}

/**
 * The progress lines of an answer so far: its text lines (inside or outside `<think>`)
 * that are not part of the final video markup or link.
 */
function progressText(content) {
  return content
    .replace(/<\/?think>/g, "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line && !line.includes("<") && !/https?:\/\/|\/v1\/files\//.test(line))
    .join("\n");
}

/**
 * Runs one video task; `onProgress` gets the progress lines, unless "Live progress" is off:
 * then the page shows only that the video is generating until the player appears.
 * Resolves to the video URL.
 */
async function makeVideo(body, onProgress) {
  const live = $("#stream").checked;
  const started = await pub("/v1/public/video/start", { json: body });
  const task = { id: started.task_id, abort: new AbortController() };
  running.set(task.id, task);
  updateRunning();
  let content = "";
  let failure = null;
  try {
    const response = await fetch(`/v1/public/video/sse?task_id=${encodeURIComponent(task.id)}`, { signal: task.abort.signal, cache: "no-store" });
    if (!response.ok) throw new Error(`stream refused (${response.status})`);
    await readSse(response, (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.type === "error" || chunk.error) {
        failure = chunk.message || chunk.error;
        return;
      }
      const delta = chunk.choices && chunk.choices[0].delta;
      if (delta && delta.content) {
        content += delta.content;
        const progress = progressText(content);
        if (progress && live) onProgress(progress);
      }
    });
  } finally {
    running.delete(task.id);
    updateRunning();
  }
  if (failure) throw new Error(failure);
  const src = videoSource(content.replace(/<think>[\s\S]*?<\/think>/, ""));
  if (!src) throw new Error("The answer held no video");
  return src;
}

function updateRunning() {
  $("#wf-running").textContent = String(running.size);
  $("#stop").disabled = running.size === 0 && !(mode === "waterfall" && !stopping && wfActive);
}

function player(src) {
  return el("video", { src, controls: true, class: "player", preload: "metadata" });
}

// Single mode.

function renderHistory() {
  const box = $("#history");
  box.replaceChildren();
  for (const [i, item] of load(HISTORY_KEY).entries()) {
    box.append(el("div", { class: "history-item" },
      el("button", { class: "btn btn-sm", type: "button", onclick: () => { $("#player").replaceChildren(player(item.src)); } }, "Play"),
      el("span", { class: "grow" }, item.prompt),
      el("span", { class: "muted" }, new Date(item.at).toLocaleString()),
      el("button", { class: "btn btn-sm btn-danger", type: "button", onclick: () => {
        const items = load(HISTORY_KEY);
        items.splice(i, 1);
        save(HISTORY_KEY, items);
        renderHistory();
      } }, "Delete")));
  }
}

async function single() {
  const body = params();
  $("#single-status").textContent = "generating";
  $("#single-status").className = "badge badge-cooling";
  $("#single-params").textContent = `${body.aspect_ratio} · ${body.video_length} s · ${body.resolution_name} · ${body.preset}`;
  $("#single-progress").textContent = $("#stream").checked ? "" : "generating…";
  $("#player").replaceChildren();
  $("#generate").disabled = true;
  try {
    const src = await makeVideo(body, (text) => { $("#single-progress").textContent = text; });
    $("#player").replaceChildren(player(src));
    if ($("#single-progress").textContent === "generating…") $("#single-progress").textContent = "";
    $("#single-status").textContent = "done";
    $("#single-status").className = "badge badge-active";
    const items = load(HISTORY_KEY);
    items.unshift({ src, prompt: body.prompt, at: Date.now() });
    save(HISTORY_KEY, items);
    renderHistory();
  } catch (e) {
    $("#single-status").textContent = "failed";
    $("#single-status").className = "badge badge-error";
    if (e.name !== "AbortError") toast(e.message, "error");
  } finally {
    $("#generate").disabled = false;
  }
}

// Waterfall mode.

let wfActive = false;

function wfItems() {
  return load(WF_KEY);
}

/** Items left generating by an earlier visit can no longer finish here. */
function settleStale() {
  const items = wfItems();
  for (const item of items) {
    if (item.state === "generating") {
      item.state = "failed";
      item.error = "interrupted";
    }
  }
  save(WF_KEY, items);
}

function wfTile(item) {
  const tile = el("figure", { class: "tile", dataset: { id: item.id, state: item.state } },
    el("span", { class: `badge tile-tag badge-${item.state === "done" ? "active" : item.state === "failed" ? "error" : "cooling"}` }, item.state));
  if (item.src) {
    const video = el("video", { src: item.src, muted: true, preload: "metadata", class: "tile-video" });
    video.addEventListener("click", () => openLightbox(item.id));
    tile.append(video, el("input", { type: "checkbox", class: "tile-select", "aria-label": "select" }));
  } else if (item.error) {
    tile.append(el("div", { class: "error-text" }, item.error));
  } else {
    tile.append(el("div", { class: "muted tile-progress" }, item.progress || "waiting…"));
  }
  tile.append(el("figcaption", { class: "muted" }, item.prompt));
  return tile;
}

function renderWaterfall() {
  const grid = $("#wf-grid");
  grid.replaceChildren(...wfItems().map(wfTile));
  $("#wf-count").textContent = String(wfItems().filter((i) => i.src).length);
}

function putItem(item) {
  const items = wfItems();
  const at = items.findIndex((i) => i.id === item.id);
  if (at >= 0) items[at] = item;
  else items.push(item);
  save(WF_KEY, items.slice(-MAX_HISTORY));
  const old = $(`.tile[data-id="${item.id}"]`);
  const tile = wfTile(item);
  if (old) old.replaceWith(tile);
  else $("#wf-grid").append(tile);
  $("#wf-count").textContent = String(wfItems().filter((i) => i.src).length);
  if ($("#auto-scroll").checked) tile.scrollIntoView({ block: "nearest" });
}

async function wfSlot(body) {
  while (wfActive && !stopping) {
    const item = { id: `v${Date.now()}${Math.random().toString(16).slice(2, 6)}`, prompt: body.prompt, state: "generating" };
    putItem(item);
    try {
      item.src = await makeVideo(body, (text) => {
        item.progress = text.split("\n").pop();
        const p = $(`.tile[data-id="${item.id}"] .tile-progress`);
        if (p) p.textContent = item.progress;
      });
      item.state = "done";
      if ($("#auto-download").checked) download(item.src, `${item.id}.mp4`);
    } catch (e) {
      item.state = "failed";
      item.error = e.message;
      if (e.name === "AbortError") item.error = "stopped";
    }
    putItem(item);
    if (item.state === "failed" && !stopping) await new Promise((r) => setTimeout(r, 2000));
  }
}

async function waterfall() {
  const body = params();
  wfActive = true;
  stopping = false;
  $("#generate").disabled = true;
  $("#stop").disabled = false;
  const n = Number($("#concurrency").value);
  await Promise.all(Array.from({ length: n }, () => wfSlot(body)));
  wfActive = false;
  stopping = false;
  $("#generate").disabled = false;
  $("#stop").disabled = true;
  $("#stop").textContent = "Stop";
}

async function stop() {
  if (mode === "waterfall" && wfActive && !stopping) {
    // Graceful: no new videos; running ones finish. A second press cancels them.
    stopping = true;
    $("#stop").textContent = "Cancel running";
    toast("Stopping after the running videos finish", "info");
    return;
  }
  const ids = [...running.keys()];
  for (const task of running.values()) task.abort.abort();
  if (ids.length) {
    try { await pub("/v1/public/video/stop", { json: { task_ids: ids } }); } catch (_) { /* gone */ }
  }
}

function openLightbox(id) {
  const items = wfItems().filter((i) => i.src);
  lightboxIndex = Math.max(0, items.findIndex((i) => i.id === id));
  showLightbox(items);
  openModal("lightbox");
}

function showLightbox(items) {
  if (!items.length) return;
  lightboxIndex = (lightboxIndex + items.length) % items.length;
  $("#lightbox-video").src = items[lightboxIndex].src;
}

function selectedIds() {
  return $$(".tile").filter((t) => t.querySelector(".tile-select:checked")).map((t) => t.dataset.id);
}

function setMode(next) {
  mode = next;
  for (const tab of $$(".tab[data-mode]")) tab.classList.toggle("active", tab.dataset.mode === next);
  for (const node of $$(".wf-only")) node.classList.toggle("hidden", next !== "waterfall");
  $("#single-panel").classList.toggle("hidden", next !== "single");
  $("#waterfall-panel").classList.toggle("hidden", next !== "waterfall");
}

function generate() {
  if (!$("#prompt").value.trim()) {
    toast("Write a prompt first", "error");
    return;
  }
  if (mode === "single") single();
  else waterfall();
}

async function init() {
  await shell();
  wireModals();
  renderHistory();
  settleStale();
  renderWaterfall();
  for (const tab of $$(".tab[data-mode]")) tab.addEventListener("click", () => setMode(tab.dataset.mode));
  $("#generate").addEventListener("click", generate);
  $("#stop").addEventListener("click", stop);
  $("#prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) generate(); });
  $("#ref-image").addEventListener("change", async () => {
    const file = $("#ref-image").files[0];
    if (!file) return;
    if (file.size > 20 * 1024 * 1024) {
      toast("Images up to 20 MB", "error");
      return;
    }
    refImage = await dataUri(file);
    $("#ref-preview").src = refImage;
    $("#ref-preview").classList.remove("hidden");
    $("#ref-remove").classList.remove("hidden");
  });
  $("#ref-remove").addEventListener("click", () => {
    refImage = null;
    $("#ref-image").value = "";
    $("#ref-preview").classList.add("hidden");
    $("#ref-remove").classList.add("hidden");
  });
  $("#history-clear").addEventListener("click", () => { save(HISTORY_KEY, []); renderHistory(); });
  $("#wf-select-all").addEventListener("click", () => { for (const c of $$(".tile-select")) c.checked = true; });
  $("#wf-download").addEventListener("click", () => {
    const ids = new Set(selectedIds());
    for (const item of wfItems().filter((i) => ids.has(i.id) && i.src)) download(item.src, `${item.id}.mp4`);
  });
  $("#wf-delete").addEventListener("click", () => {
    const ids = new Set(selectedIds());
    save(WF_KEY, wfItems().filter((i) => !ids.has(i.id)));
    renderWaterfall();
  });
  $("#lb-prev").addEventListener("click", () => { lightboxIndex -= 1; showLightbox(wfItems().filter((i) => i.src)); });
  $("#lb-next").addEventListener("click", () => { lightboxIndex += 1; showLightbox(wfItems().filter((i) => i.src)); });
  document.addEventListener("keydown", (e) => {
    if (!$("#lightbox").open) return;
    if (e.key === "ArrowLeft") $("#lb-prev").click();
    if (e.key === "ArrowRight") $("#lb-next").click();
  });
}

init().catch((e) => toast(e.message, "error"));
