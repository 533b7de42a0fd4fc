// Live progress of an account batch in the progress dialog: follows
// GET /v1/admin/batch/{id}/stream with fetch streaming, and cancels through
// POST /v1/admin/batch/{id}/cancel.
import { api, streamEvents } from "/static/common/api.js";
import { $, openModal, toast } from "/static/common/ui.js";

const TERMINAL = new Set(["done", "error", "cancelled"]);

/**
 * Starts `path` with `body` (an async batch route), shows its progress under `title`, and
 * resolves with the final event (or null if the dialog was closed first).
 */
export async function runBatch(title, path, body) {
  const started = await api(path, { json: body });
  if (!started.task_id) {
    toast(started.message || "Nothing to do", "info");
    return null;
  }
  return followBatch(title, started.task_id, started.total);
}

export function followBatch(title, taskId, total) {
  const dialog = openModal("progress-modal");
  const abort = new AbortController();
  const cancel = $("#progress-cancel");
  const close = $("#progress-close");
  $("#progress-title").textContent = title;
  dialog.dataset.task = taskId;
  dialog.dataset.state = "running";
  show({ total: total || 0, processed: 0, ok: 0, fail: 0, type: "queued" });
  cancel.disabled = false;
  cancel.onclick = async () => {
    cancel.disabled = true;
    try {
      await api(`/v1/admin/batch/${encodeURIComponent(taskId)}/cancel`, { method: "POST" });
      $("#progress-text").textContent = "Cancelling…";
    } catch (e) {
      toast(e.message, "error");
      cancel.disabled = false;
    }
  };
  close.onclick = () => {
    abort.abort();
    dialog.close();
  };
  let last = null;
  return streamEvents(
    `/v1/admin/batch/${encodeURIComponent(taskId)}/stream`,
    (event) => {
      last = event;
      show(event);
      if (TERMINAL.has(event.type)) {
        dialog.dataset.state = event.type;
        cancel.disabled = true;
      }
    },
    abort.signal,
  )
    .then(() => last)
    .catch((e) => {
      if (e.name !== "AbortError") toast(e.message, "error");
      return null;
    });
}

function show(event) {
  const total = Number(event.total) || 0;
  const processed = Number(event.processed) || 0;
  const percent = total ? Math.round((processed / total) * 100) : event.type === "done" ? 100 : 0;
  $("#progress-fill").style.width = `${percent}%`;
  $("#progress-ok").textContent = `ok ${event.ok || 0}`;
  $("#progress-fail").textContent = `failed ${event.fail || 0}`;
  const words = {
    queued: "Queued",
    snapshot: "Running",
    progress: "Running",
    done: "Done",
    error: `Failed: ${event.error || "unknown error"}`,
    cancelled: "Cancelled",
  };
  $("#progress-text").textContent = `${words[event.type] || event.type} · ${processed} / ${total}`;
}
