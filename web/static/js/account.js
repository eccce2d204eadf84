// Account: groups, recovery codes left, password change, own sessions.
import { api, clear, el, showError, toast, when } from "./api.js";

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

loadMe();
loadSessions();
