// The playground login: checks the public key with /v1/public/verify. When the server needs
// no key (or the stored one still works) it goes straight to the chat page.

import { $ } from "/static/common/ui.js";
import { publicKey, savePublicKey } from "/static/playground/common.js";

async function works(key) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch("/v1/public/verify", { headers, cache: "no-store" });
  return response.ok;
}

async function start() {
  if (await works(publicKey())) {
    location.replace("/chat");
    return;
  }
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#public-key").value.trim();
    $("#login-error").textContent = "";
    if (await works(key)) {
      savePublicKey(key);
      location.assign("/chat");
    } else {
      $("#login-error").textContent = "That key is not accepted.";
    }
  });
}

start();
