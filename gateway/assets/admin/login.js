// Login: checks the key with GET /v1/admin/verify, keeps it in localStorage, and moves on to
// the token page. A stored key that still works skips the form.
import { adminKey, api, saveAdminKey } from "/static/common/api.js";
import { $ } from "/static/common/ui.js";

async function works(key) {
  await api("/v1/admin/verify", { key, noRedirect: true });
  return true;
}

async function resume() {
  const stored = adminKey();
  if (!stored) return;
  try {
    await works(stored);
    location.replace("/admin/token");
  } catch (_) {
    // Stale key: stay on the form.
  }
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("#admin-key").value.trim();
  const error = $("#login-error");
  const button = $("#login-submit");
  error.textContent = "";
  button.disabled = true;
  try {
    await works(key);
    saveAdminKey(key);
    location.assign("/admin/token");
  } catch (e) {
    error.textContent = e.status === 401 ? "That key is not valid." : e.message;
  } finally {
    button.disabled = false;
  }
});

resume();
