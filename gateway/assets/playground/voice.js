// The Voice page: fetches a LiveKit session token (GET /v1/public/voice/token) and shows
// that the session is ready. Joining the room needs LiveKit's browser SDK, which is not
// bundled and is never loaded from a CDN.

import { $, toast, copyText } from "/static/common/ui.js";
import { pub, shell } from "/static/playground/common.js";

let token = "";

function log(line) {
  const stamp = new Date().toLocaleTimeString();
  $("#log").textContent += `[${stamp}] ${line}\n`;
}

function mask(value) {
  return value.length > 24 ? `${value.slice(0, 12)}…${value.slice(-8)}` : value;
}

async function connect() {
  const query = new URLSearchParams({
    voice: $("#voice").value,
    personality: $("#personality").value,
    speed: $("#speed").value,
  });
  $("#connect").disabled = true;
  $("#voice-status").textContent = "requesting";
  log(`requesting a token (${query.toString()})`);
  try {
    const answer = await pub(`/v1/public/voice/token?${query}`);
    token = answer.token;
    $("#session-url").textContent = answer.url;
    $("#session-token").textContent = mask(token);
    $("#session").classList.remove("hidden");
    $("#voice-status").textContent = "ready";
    $("#voice-status").className = "badge badge-active";
    log(`token received for ${answer.url}`);
  } catch (e) {
    $("#voice-status").textContent = "failed";
    $("#voice-status").className = "badge badge-error";
    log(`failed: ${e.message}`);
    toast(e.message, "error");
  } finally {
    $("#connect").disabled = false;
  }
}

async function init() {
  await shell();
  $("#connect").addEventListener("click", connect);
  $("#speed").addEventListener("input", () => { $("#speed-value").textContent = Number($("#speed").value).toFixed(1); });
  $("#copy-token").addEventListener("click", () => token && copyText(token));
  $("#log-copy").addEventListener("click", () => copyText($("#log").textContent));
  $("#log-clear").addEventListener("click", () => { $("#log").textContent = ""; });
}

init().catch((e) => toast(e.message, "error"));
