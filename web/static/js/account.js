// Account: groups, recovery codes left (and new ones), password change, own sessions, API
// tokens (list, create with scopes and expiry, revoke).
import { api, clear, confirmDialog, copyText, downloadText, el, showError, toast, when } from "./api.js";

const sessionsBody = document.getElementById("sessions");
const sessionsError = document.getElementById("sessions-error");

async function loadMe() {
  try {
    const me = await api("GET", "/api/auth/me");
    document.getElementById("me-groups").textContent = me.groups.length ? me.groups.join(", ") : "none";
    document.getElementById("me-recovery").textContent = String(me.recovery_codes_left);
  } catch (error) {
    toast(error.message);
  }
}

async function loadSessions() {
  let rows;
  try {
    rows = await api("GET", "/api/auth/sessions");
  } catch (error) {
    showError(sessionsError, error);
    return;
  }
  clear(sessionsBody);
  for (const s of rows) {
    const end = el("button", {
      type: "button",
      onclick: async () => {
        try {
          await api("DELETE", `/api/auth/sessions/${s.id}`);
          if (s.current) location.assign("/signin");
          else loadSessions();
        } catch (error) {
          showError(sessionsError, error);
        }
      },
    }, s.current ? "Sign out" : "End");
    sessionsBody.append(el("tr", {},
      el("td", {}, s.user_agent || "unknown browser", s.current ? el("strong", {}, " (this one)") : null),
      el("td", {}, s.client || ""),
      el("td", {}, when(s.created_at)),
      el("td", {}, when(s.last_seen_at)),
      el("td", {}, end)));
  }
}

document.getElementById("end-others").addEventListener("click", async () => {
  try {
    const result = await api("DELETE", "/api/auth/sessions");
    toast(`${result.ended} other session(s) ended.`);
    loadSessions();
  } catch (error) {
    showError(sessionsError, error);
  }
});

document.getElementById("password-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = document.getElementById("pw-error");
  box.hidden = true;
  const old = document.getElementById("pw-old");
  const fresh = document.getElementById("pw-new");
  const again = document.getElementById("pw-again");
  if (fresh.value !== again.value) {
    showError(box, "The two new passwords differ. Type the same password twice.");
    return;
  }
  try {
    await api("POST", "/api/auth/password", { old: old.value, new: fresh.value });
    old.value = fresh.value = again.value = "";
    toast("Password changed. Other sessions were signed out.");
    loadSessions();
  } catch (error) {
    showError(box, error);
  }
});

// -- recovery codes -----------------------------------------------------------------------

function codesText() {
  const codes = [...document.querySelectorAll("#recovery-codes code")].map((c) => c.textContent);
  const user = document.body.dataset.username || "";
  return `Recovery codes${user ? ` for ${user}` : ""} (${location.host}), each works once:\n\n${codes.join("\n")}\n`;
}

document.getElementById("recovery-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = document.getElementById("recovery-error");
  box.hidden = true;
  const code = document.getElementById("recovery-code-now");
  const password = document.getElementById("recovery-password");
  const body = code.value.trim() ? { code: code.value.replace(/\s/g, "") } : { password: password.value };
  if (!code.value.trim() && !password.value) {
    showError(box, "Enter a code from your authenticator app, or your password.");
    return;
  }
  try {
    const result = await api("POST", "/api/auth/recovery-codes", body);
    const list = clear(document.getElementById("recovery-codes"));
    for (const c of result.recovery_codes) list.append(el("li", {}, el("code", {}, c)));
    document.getElementById("new-codes").hidden = false;
    toast("New recovery codes made; the old ones no longer work.");
    loadMe();
  } catch (error) {
    showError(box, error);
  } finally {
    code.value = "";
    password.value = "";
  }
});

document.getElementById("codes-copy").addEventListener("click", async () => {
  toast((await copyText(codesText())) ? "Recovery codes copied." : "Copy failed: select them by hand.");
});
document.getElementById("codes-print").addEventListener("click", () => {
  document.body.classList.add("printing-codes");
  window.print();
  document.body.classList.remove("printing-codes");
});
document.getElementById("codes-download").addEventListener("click", () => {
  downloadText("recovery-codes.txt", codesText());
});

// -- API tokens ---------------------------------------------------------------------------

function tokenState(t) {
  if (t.revoked_at) return `revoked ${when(t.revoked_at)}`;
  if (new Date(t.expires_at) <= new Date()) return "expired";
  return "active";
}

async function loadTokens() {
  const box = document.getElementById("tokens-error");
  let rows;
  try {
    rows = await api("GET", "/api/auth/tokens");
  } catch (error) {
    showError(box, error);
    return;
  }
  const body = clear(document.getElementById("tokens"));
  document.getElementById("tokens-empty").hidden = rows.length > 0;
  document.getElementById("tokens-table").hidden = rows.length === 0;
  for (const t of rows) {
    const state = tokenState(t);
    const revoke = state === "active"
      ? el("button", { type: "button", class: "danger", "aria-label": `Revoke ${t.name}`, onclick: async () => {
        if (!(await confirmDialog(`Revoke the token “${t.name}”? Scripts using it stop working at once.`, "Revoke"))) return;
        try {
          await api("DELETE", `/api/auth/tokens/${encodeURIComponent(t.id)}`);
          toast(`Token “${t.name}” revoked.`);
        } catch (error) {
          showError(box, error);
        }
        loadTokens();
      } }, "Revoke")
      : null;
    body.append(el("tr", { dataset: { id: t.id } },
      el("td", {}, t.name),
      el("td", {}, t.scopes.join(", ")),
      el("td", {}, when(t.created_at)),
      el("td", {}, when(t.expires_at)),
      el("td", {}, t.last_used_at ? when(t.last_used_at) : "never"),
      el("td", {}, state),
      el("td", { class: "actions" }, revoke)));
  }
}

document.getElementById("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = document.getElementById("tokens-error");
  box.hidden = true;
  const scopes = [...document.querySelectorAll('#token-form input[name="scope"]:checked')].map((c) => c.value);
  if (!scopes.length) {
    showError(box, "Choose at least one scope.");
    return;
  }
  const name = document.getElementById("token-name");
  try {
    const result = await api("POST", "/api/auth/tokens", {
      name: name.value.trim(),
      scopes,
      days: Number(document.getElementById("token-days").value),
    });
    document.getElementById("token-secret").textContent = result.token;
    document.getElementById("token-secret-box").hidden = false;
    name.value = "";
    loadTokens();
  } catch (error) {
    showError(box, error);
  }
});

document.getElementById("token-copy").addEventListener("click", async () => {
  const secret = document.getElementById("token-secret").textContent;
  toast((await copyText(secret)) ? "Token copied." : "Copy failed: select it by hand.");
});

loadMe();
loadSessions();
loadTokens();
