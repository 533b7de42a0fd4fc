// The chat page: streams answers from /v1/public/chat/completions, shows `<think>` sections
// as collapsible blocks, keeps the conversation in memory, and offers copy and retry.

import { el, $, toast, copyText } from "/static/common/ui.js";
import { pub, readSse, shell, dataUri } from "/static/playground/common.js";

const PREFERRED = "grok-4.20-beta";
const history = [];
let attachment = null;
let controller = null;

async function loadModels() {
  const list = await pub("/v1/public/models");
  const ids = list.data.map((m) => m.id).filter((id) => !id.startsWith("grok-imagine"));
  const select = $("#model");
  for (const id of ids) select.append(el("option", { value: id }, id));
  select.value = ids.includes(PREFERRED) ? PREFERRED : ids[0];
}

/** Splits content into text and `<think>` parts (an unclosed one is still streaming). */
function parts(content) {
  const out = [];
  let rest = content;
  for (;;) {
    const open = rest.indexOf("<think>");
    if (open < 0) break;
    if (open > 0) out.push({ kind: "text", text: rest.slice(0, open) });
    const close = rest.indexOf("</think>", open);
    if (close < 0) {
      out.push({ kind: "think", text: rest.slice(open + 7), open: true });
      return out;
    }
    out.push({ kind: "think", text: rest.slice(open + 7, close), open: false });
    rest = rest.slice(close + 8);
  }
  if (rest) out.push({ kind: "text", text: rest });
  return out;
}

/** Minimal, safe markdown: fenced code, inline code, bold, line breaks; text nodes only. */
function markdown(text) {
  const box = el("div", { class: "md" });
  const blocks = text.split(/```/);
  blocks.forEach((block, i) => {
    if (i % 2 === 1) {
      const body = block.replace(/^[\w-]*\n/, "");
      box.append(el("pre", {}, el("code", {}, body)));
      return;
    }
    for (const para of block.split(/\n{2,}/)) {
      if (!para.trim()) continue;
      const p = el("p");
      for (const piece of para.split(/(`[^`]+`|\*\*[^*]+\*\*|\n)/)) {
        if (!piece) continue;
        if (piece === "\n") p.append(el("br"));
        else if (piece.startsWith("`") && piece.endsWith("`")) p.append(el("code", {}, piece.slice(1, -1)));
        else if (piece.startsWith("**") && piece.endsWith("**")) p.append(el("strong", {}, piece.slice(2, -2)));
        else p.append(piece);
      }
      box.append(p);
    }
  });
  return box;
}

function render(node, content, elapsed) {
  node.replaceChildren();
  for (const part of parts(content)) {
    if (part.kind === "think") {
      const label = part.open ? "Thinking…" : `Thought${elapsed ? ` for ${elapsed}s` : ""}`;
      const details = el("details", { class: "think", open: part.open }, el("summary", {}, label), el("div", { class: "think-body" }, part.text.trim()));
      node.append(details);
    } else {
      node.append(markdown(part.text));
    }
  }
}

function bubble(role, text) {
  const body = el("div", { class: "bubble-body" });
  const node = el("div", { class: `bubble bubble-${role}`, dataset: { role } }, el("div", { class: "bubble-role" }, role === "user" ? "You" : "Assistant"), body);
  if (role === "user") body.append(markdown(text));
  $("#messages").append(node);
  node.scrollIntoView({ block: "end" });
  return { node, body };
}

function setBusy(on) {
  $("#send").disabled = on;
  $("#stop").classList.toggle("hidden", !on);
}

function userContent(text, file) {
  if (!file) return text;
  const block = file.type.startsWith("image/")
    ? { type: "image_url", image_url: { url: file.data } }
    : { type: "file", file: { file_data: file.data, filename: file.name } };
  return [{ type: "text", text }, block];
}

/** Reads a streamed answer, handing each piece of text (reasoning wrapped in `<think>`) to `onText`. */
async function streamAnswer(body, onText, thinkOpened) {
  const response = await pub("/v1/public/chat/completions", { json: body, raw: true, signal: controller.signal });
  await readSse(response, (data) => {
    if (data === "[DONE]") return;
    let chunk;
    try { chunk = JSON.parse(data); } catch (_) { return; }
    if (chunk.error) throw new Error(chunk.error.message || "The answer failed");
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.reasoning_content) onText((thinkOpened() ? "" : "<think>") + delta.reasoning_content);
    if (delta && delta.content) onText(delta.content);
  });
}

async function ask() {
  const messages = [];
  const system = $("#system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = {
    model: $("#model").value,
    messages,
    stream: $("#stream").checked,
    temperature: Number($("#temperature").value),
    top_p: Number($("#top-p").value),
  };
  if ($("#effort").value) body.reasoning_effort = $("#effort").value;
  const { node, body: out } = bubble("assistant", "");
  out.append(el("span", { class: "muted typing" }, "…"));
  controller = new AbortController();
  setBusy(true);
  const started = Date.now();
  let content = "";
  let thinkDone = null;
  try {
    if (!body.stream) {
      // Non-streamed: the whole answer arrives at once as one completion object.
      const completion = await pub("/v1/public/chat/completions", { json: body, signal: controller.signal });
      const message = (completion.choices && completion.choices[0] && completion.choices[0].message) || {};
      if (message.reasoning_content) content = `<think>${message.reasoning_content}</think>`;
      content += message.content || "";
      if (content.includes("</think>")) thinkDone = ((Date.now() - started) / 1000).toFixed(1);
      render(out, content, thinkDone);
      node.scrollIntoView({ block: "end" });
    } else {
      await streamAnswer(body, (piece) => {
        content += piece;
        if (thinkDone === null && content.includes("</think>")) thinkDone = ((Date.now() - started) / 1000).toFixed(1);
        render(out, content, thinkDone);
        node.scrollIntoView({ block: "end" });
      }, () => content.includes("<think>"));
    }
    node.dataset.done = "true";
  } catch (e) {
    if (e.name !== "AbortError") {
      out.append(el("div", { class: "error-text" }, e.message));
      toast(e.message, "error");
    }
    node.dataset.done = "error";
  } finally {
    controller = null;
    setBusy(false);
  }
  const answer = content.replace(/<think>[\s\S]*?(<\/think>|$)/g, "").trim();
  if (answer) history.push({ role: "assistant", content: answer });
  const actions = el("div", { class: "row bubble-actions" },
    el("button", { class: "btn btn-sm copy", type: "button", onclick: () => copyText(answer) }, "Copy"),
    el("button", { class: "btn btn-sm retry", type: "button", onclick: () => retry(node) }, "Retry"));
  node.append(actions);
}

function retry(node) {
  if (controller) return;
  // Drop the last answer and ask again with the same conversation.
  if (history.length && history[history.length - 1].role === "assistant") history.pop();
  node.remove();
  ask();
}

async function send(event) {
  event.preventDefault();
  if (controller) return;
  const text = $("#prompt").value.trim();
  if (!text) return;
  history.push({ role: "user", content: userContent(text, attachment) });
  bubble("user", attachment ? `${text}\n\n[${attachment.name}]` : text);
  $("#prompt").value = "";
  attachment = null;
  $("#attachment").textContent = "";
  $("#attach").value = "";
  await ask();
}

async function start() {
  await shell();
  await loadModels();
  $("#composer").addEventListener("submit", send);
  $("#prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#stop").addEventListener("click", () => controller && controller.abort());
  $("#clear-chat").addEventListener("click", () => {
    history.length = 0;
    $("#messages").replaceChildren();
  });
  for (const [input, output] of [["#temperature", "#temperature-value"], ["#top-p", "#top-p-value"]]) {
    $(input).addEventListener("input", () => { $(output).textContent = $(input).value; });
  }
  $("#attach").addEventListener("change", async () => {
    const file = $("#attach").files[0];
    if (!file) return;
    if (file.size > 20 * 1024 * 1024) {
      toast("Files up to 20 MB", "error");
      return;
    }
    attachment = { name: file.name, type: file.type, data: await dataUri(file) };
    $("#attachment").textContent = file.name;
  });
}

start().catch((e) => toast(e.message, "error"));
