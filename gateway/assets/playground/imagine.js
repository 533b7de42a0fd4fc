// The Imagine page. Generate mode starts 1 to 3 tasks (POST /v1/public/imagine/start) and
// follows each over a WebSocket, or over SSE (Auto falls back to SSE when no socket opens
// within 1.5 s); images land in a waterfall with status tags. Edit mode sends one reference
// image to /v1/public/images/edits.

import { el, $, $$, toast } from "/static/common/ui.js";
import { pub, readSse, shell, download } from "/static/playground/common.js";

const MODE_KEY = "imagine_mode";
let config = { final_min_bytes: 100000, nsfw: true };
let tasks = [];
let count = 0;
let latencyTotal = 0;
let editFile = null;

function setStatus(text, kind = "muted") {
  const s = $("#status");
  s.textContent = text;
  s.className = `badge badge-${kind}`;
}

function card(tag, kind) {
  const item = el("figure", { class: "tile", dataset: { state: kind } },
    el("span", { class: `badge tile-tag badge-${kind === "done" ? "active" : kind === "failed" ? "error" : "cooling"}` }, tag));
  const wall = $("#waterfall");
  if ($("#reverse").checked) wall.prepend(item);
  else wall.append(item);
  return item;
}

function showImage(src, name, meta) {
  const bytes = src.startsWith("data:") ? Math.floor((src.length - src.indexOf(",") - 1) * 3 / 4) : 0;
  if ($("#auto-filter").checked && bytes && bytes < config.final_min_bytes) return;
  const item = card("done", "done");
  const check = el("input", { type: "checkbox", class: "tile-select", "aria-label": "select" });
  item.append(el("img", { src, alt: name, class: "tile-image", dataset: { name } }), check,
    el("figcaption", { class: "muted" }, meta));
  count += 1;
  $("#count").textContent = String(count);
  if ($("#auto-download").checked) download(src, name);
  if ($("#auto-scroll").checked) item.scrollIntoView({ block: "nearest" });
}

/** A task's "generating" tile, kept after its newest image while the task runs. */
function pendingTile(task, on) {
  if (task.pending) task.pending.remove();
  task.pending = null;
  if (!on) return;
  task.pending = card("generating", "pending");
  task.pending.append(el("div", { class: "muted tile-progress" }, "generating…"));
}

function onMessage(task, message) {
  if (message.type === "status") {
    task.status = message.status;
    if (message.status === "running") setStatus("running", "cooling");
    pendingTile(task, message.status === "running");
  } else if (message.type === "image") {
    const src = message.b64_json ? `data:image/png;base64,${message.b64_json}` : message.url;
    showImage(src, `imagine-${message.run_id.slice(0, 8)}-${message.sequence}.png`, `#${message.sequence} · ${message.aspect_ratio} · ${(message.elapsed_ms / 1000).toFixed(1)} s`);
    // A run's images arrive one after another: its average time per image so far.
    latencyTotal += message.elapsed_ms / Math.max(1, message.sequence);
    $("#latency").textContent = `${(latencyTotal / Math.max(1, count) / 1000).toFixed(1)} s`;
    pendingTile(task, true);
  } else if (message.type === "error") {
    const item = card("failed", "failed");
    item.append(el("div", { class: "error-text" }, message.message || message.code));
    if (task.status === "running") pendingTile(task, true);
  }
}

function openSse(task) {
  task.abort = new AbortController();
  const path = `/v1/public/imagine/sse?task_id=${encodeURIComponent(task.id)}`;
  fetch(path, { signal: task.abort.signal, cache: "no-store" })
    .then((r) => {
      if (!r.ok) throw new Error(`stream refused (${r.status})`);
      return readSse(r, (data) => onMessage(task, JSON.parse(data)));
    })
    .catch((e) => { if (e.name !== "AbortError") toast(e.message, "error"); });
}

function openWs(task, params, fallback) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/public/imagine/ws?task_id=${encodeURIComponent(task.id)}`);
  task.socket = socket;
  let opened = false;
  const timer = fallback ? setTimeout(() => {
    if (!opened) {
      socket.close();
      task.socket = null;
      openSse(task);
    }
  }, 1500) : null;
  socket.addEventListener("open", () => {
    opened = true;
    if (timer) clearTimeout(timer);
    socket.send(JSON.stringify({ type: "start", ...params }));
  });
  socket.addEventListener("message", (event) => onMessage(task, JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    if (event.code === 1008) toast("The task expired; start again", "error");
  });
}

async function start() {
  const prompt = $("#prompt").value.trim();
  if (!prompt) {
    toast("Write a prompt first", "error");
    return;
  }
  await stop();
  const params = { prompt, aspect_ratio: $("#ratio").value, nsfw: $("#nsfw").checked };
  const transport = $("#transport").value;
  localStorage.setItem(MODE_KEY, transport);
  $("#start").disabled = true;
  $("#stop").disabled = false;
  try {
    const n = Number($("#concurrency").value);
    for (let i = 0; i < n; i += 1) {
      const started = await pub("/v1/public/imagine/start", { json: params });
      const task = { id: started.task_id, status: "starting" };
      tasks.push(task);
      if (transport === "sse") openSse(task);
      else openWs(task, params, transport === "auto");
    }
    setStatus("running", "cooling");
  } catch (e) {
    toast(e.message, "error");
    await stop();
  }
}

async function stop() {
  const ids = tasks.map((t) => t.id);
  for (const task of tasks) {
    pendingTile(task, false);
    if (task.socket && task.socket.readyState === WebSocket.OPEN) task.socket.send(JSON.stringify({ type: "stop" }));
    if (task.socket) task.socket.close();
    if (task.abort) task.abort.abort();
  }
  tasks = [];
  if (ids.length) {
    try { await pub("/v1/public/imagine/stop", { json: { task_ids: ids } }); } catch (_) { /* already gone */ }
  }
  $("#start").disabled = false;
  $("#stop").disabled = true;
  setStatus("stopped");
}

function setMode(mode) {
  for (const tab of $$(".tab[data-mode]")) tab.classList.toggle("active", tab.dataset.mode === mode);
  $("#generate-panel").classList.toggle("hidden", mode !== "generate");
  $("#edit-panel").classList.toggle("hidden", mode !== "edit");
}

function chooseEditFile(file) {
  if (!file) return;
  if (file.size > 50 * 1024 * 1024) {
    toast("Images up to 50 MB", "error");
    return;
  }
  editFile = file;
  const preview = $("#edit-preview");
  preview.src = URL.createObjectURL(file);
  preview.classList.remove("hidden");
  $("#edit-remove").classList.remove("hidden");
}

async function runEdit() {
  const prompt = $("#edit-prompt").value.trim();
  if (!editFile || !prompt) {
    toast("Choose an image and write a prompt", "error");
    return;
  }
  const pending = card("editing", "pending");
  pending.append(el("div", { class: "muted" }, prompt));
  const form = new FormData();
  form.append("prompt", prompt);
  form.append("model", "grok-imagine-1.0-edit");
  form.append("n", "1");
  form.append("response_format", "b64_json");
  form.append("image", editFile, editFile.name);
  const started = Date.now();
  $("#edit-run").disabled = true;
  try {
    const answer = await pub("/v1/public/images/edits", { form });
    pending.remove();
    for (const [i, image] of answer.data.entries()) {
      const src = image.b64_json ? `data:image/png;base64,${image.b64_json}` : image.url;
      showImage(src, `edit-${Date.now()}-${i}.png`, `edit · ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  } catch (e) {
    pending.dataset.state = "failed";
    pending.querySelector(".tile-tag").textContent = "failed";
    pending.append(el("div", { class: "error-text" }, e.message));
  } finally {
    $("#edit-run").disabled = false;
  }
}

async function init() {
  await shell();
  config = await fetch("/v1/public/imagine/config", { cache: "no-store" }).then((r) => r.json());
  $("#nsfw").checked = Boolean(config.nsfw);
  $("#transport").value = localStorage.getItem(MODE_KEY) || "auto";
  $("#start").addEventListener("click", start);
  $("#stop").addEventListener("click", stop);
  $("#prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) start(); });
  for (const tab of $$(".tab[data-mode]")) tab.addEventListener("click", () => setMode(tab.dataset.mode));
  $("#edit-file").addEventListener("change", () => chooseEditFile($("#edit-file").files[0]));
  $("#dropzone").addEventListener("dragover", (e) => e.preventDefault());
  $("#dropzone").addEventListener("drop", (e) => { e.preventDefault(); chooseEditFile(e.dataTransfer.files[0]); });
  $("#edit-remove").addEventListener("click", () => {
    editFile = null;
    $("#edit-file").value = "";
    $("#edit-preview").classList.add("hidden");
    $("#edit-remove").classList.add("hidden");
  });
  $("#edit-run").addEventListener("click", runEdit);
  $("#select-all").addEventListener("click", () => { for (const c of $$(".tile-select")) c.checked = true; });
  $("#download-selected").addEventListener("click", () => {
    const chosen = $$(".tile").filter((t) => t.querySelector(".tile-select:checked"));
    if (!chosen.length) toast("Select some images first", "info");
    for (const tile of chosen) {
      const img = tile.querySelector("img");
      download(img.src, img.dataset.name);
    }
  });
  $("#clear").addEventListener("click", () => {
    $("#waterfall").replaceChildren();
    count = 0;
    latencyTotal = 0;
    $("#count").textContent = "0";
    $("#latency").textContent = "-";
  });
  window.addEventListener("beforeunload", () => { stop(); });
}

init().catch((e) => toast(e.message, "error"));
