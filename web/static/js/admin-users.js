// Admin: accounts — create, disable/enable, reset password or second factor, unlock, delete.
import { api, clear, confirmDialog, el, showError, toast, when } from "./api.js";

const tbody = document.getElementById("users");
const errorBox = document.getElementById("users-error");
const secretBox = document.getElementById("secret-box");

function showSecret(label, password) {
  document.getElementById("secret-label").textContent = label;
  document.getElementById("one-time-password").textContent = password;
  secretBox.hidden = false;
  document.getElementById("secret-done").focus();
}

document.getElementById("secret-done").addEventListener("click", () => {
  document.getElementById("one-time-password").textContent = "";
  secretBox.hidden = true;
});

async function act(work, message) {
  errorBox.hidden = true;
  try {
    const result = await work();
    if (message) toast(message);
    await load();
    return result;
  } catch (error) {
    showError(errorBox, error);
    return null;
  }
}

function actions(u) {
  const out = [];
  const button = (label, handler, cls) => el("button", { type: "button", class: cls, onclick: handler, "aria-label": `${label}: ${u.username}` }, label);
  if (u.is_active) {
    out.push(button("Disable", () => act(() => api("POST", `/api/admin/users/${u.id}/disable`), `${u.username} is disabled; their sessions ended.`)));
  } else {
    out.push(button("Enable", () => act(() => api("POST", `/api/admin/users/${u.id}/enable`), `${u.username} is enabled.`)));
  }
  out.push(button("Reset password", async () => {
    if (!(await confirmDialog(`Give ${u.username} a new one-time password? Their sessions end.`, "Reset"))) return;
    const result = await act(() => api("POST", `/api/admin/users/${u.id}/reset-password`));
    if (result) showSecret(`New one-time password for ${u.username}:`, result.one_time_password);
  }));
  out.push(button("Reset second factor", async () => {
    if (!(await confirmDialog(`Forget ${u.username}'s authenticator? They enrol again at next sign-in.`, "Reset"))) return;
    act(() => api("POST", `/api/admin/users/${u.id}/reset-totp`), `${u.username} enrols again at next sign-in.`);
  }));
  if (u.locked_until) {
    out.push(button("Unlock", () => act(() => api("POST", `/api/admin/users/${u.id}/unlock`), `${u.username} is unlocked.`)));
  }
  out.push(button(u.role === "admin" ? "Make user" : "Make admin", () =>
    act(() => api("PATCH", `/api/admin/users/${u.id}`, { role: u.role === "admin" ? "user" : "admin" }), "Role changed.")));
  out.push(button("Delete", async () => {
    if (!(await confirmDialog(`Delete ${u.username} and their conversations? This cannot be undone.`))) return;
    act(() => api("DELETE", `/api/admin/users/${u.id}`), `${u.username} deleted.`);
  }, "danger"));
  return out;
}

async function load() {
  let users;
  try {
    users = await api("GET", "/api/admin/users");
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  clear(tbody);
  for (const u of users) {
    const state = [u.is_active ? "active" : "disabled"];
    if (u.locked_until) state.push(`locked until ${when(u.locked_until)}`);
    if (u.must_change_password) state.push("must change password");
    tbody.append(el("tr", { dataset: { username: u.username } },
      el("td", {}, u.username),
      el("td", {}, u.role),
      el("td", {}, state.join(", ")),
      el("td", {}, u.totp_enrolled ? "enrolled" : "not yet enrolled"),
      el("td", {}, when(u.created_at)),
      el("td", { class: "actions" }, actions(u))));
  }
}

document.getElementById("create-user").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = document.getElementById("new-username");
  const role = document.getElementById("new-role").value;
  const result = await act(() => api("POST", "/api/admin/users", { username: name.value.trim(), role }));
  if (result) {
    showSecret(`One-time password for ${result.user.username}:`, result.one_time_password);
    name.value = "";
  }
});

load();
