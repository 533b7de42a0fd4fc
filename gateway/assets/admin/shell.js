// The frame of every admin page behind the login: header, navigation, storage backend and
// logout. Pages call `startPage("token")` before anything else.
import { adminKey, api, forgetAdminKey } from "/static/common/api.js";
import { el, wireModals } from "/static/common/ui.js";

const LINKS = [
  ["token", "/admin/token", "Tokens"],
  ["config", "/admin/config", "Config"],
  ["cache", "/admin/cache", "Cache"],
  ["keys", "/admin/keys", "API keys"],
];

export function startPage(active) {
  if (!adminKey()) {
    location.replace("/admin/login");
    throw new Error("not logged in");
  }
  const storage = el("span", { class: "badge badge-muted storage", id: "storage" }, "storage: …");
  const logout = el(
    "button",
    {
      class: "btn btn-sm",
      id: "logout",
      onclick: () => {
        forgetAdminKey();
        location.assign("/admin/login");
      },
    },
    "Log out",
  );
  const nav = el(
    "nav",
    { class: "nav" },
    LINKS.map(([id, href, label]) => el("a", { href, class: id === active ? "active" : "" }, label)),
  );
  const header = el(
    "header",
    { class: "topbar" },
    el("div", { class: "topbar-inner" }, el("a", { class: "brand", href: "/admin/token" }, "grok2api"), nav, el("span", { class: "grow" }), storage, logout),
  );
  document.body.prepend(header);
  wireModals();
  api("/v1/admin/storage")
    .then((s) => {
      storage.textContent = `storage: ${s.type || "unknown"}`;
    })
    .catch(() => {
      storage.textContent = "storage: unknown";
    });
}
