// Admin: accounts — create, disable/enable, reset password or second factor, unlock, delete,
// group membership, and the admin role (which waits for a second admin's approval).
import { api, clear, confirmDialog, el, showError, ticksEl, timeEl, toast } from "./api.js";

const tbody = document.getElementById("users");
const errorBox = document.getElementById("users-error");
const notice = document.getElementById("users-notice");
const secretBox = document.getElementById("secret-box");
let groups = [];

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

function tell(text) {
  clear(notice).append(ticksEl(text));
  notice.hidden = !text;
}

async function act(work, message) {
  errorBox.hidden = true;
  tell("");
  try {
    const result = await work();
    if (message) toast(typeof message === "function" ? message(result) : message);
    await load();
    return result;
  } catch (error) {
    showError(errorBox, error);
    return null;
  }
}

// A 202 answer: the action is filed for a second admin; say so, and why nobody can yet.
function held(result, what) {
  if (!result || result.status !== "pending") return false;
  tell(`${what} needs a second admin's approval: the request is in the approvals inbox.${result.waiting_note ? ` ${result.waiting_note}` : ""}`);
  return true;
}

async function makeAdmin(u) {
  const result = await act(() => api("PATCH", `/api/admin/users/${u.id}`, { role: "admin" }));
  if (!held(result, `Making ${u.username} an admin`) && result) toast(`${u.username} is now an admin.`);
}

function actions(u) {
  const out = [];
  const button = (label, handler, cls) => el("button", { type: "button", class: cls, onclick: handler, "aria-label": `${label}: ${u.username}` }, label);
  if (u.is_active) {
    out.push(button("Disable", async () => {
      if (!(await confirmDialog(`Disable ${u.username}? They are signed out everywhere at once and cannot sign in until an admin enables the account again.`, "Disable"))) return;
      act(() => api("POST", `/api/admin/users/${u.id}/disable`), `${u.username} is disabled; their sessions ended.`);
    }));
  } else {
    out.push(button("Enable", () => act(() => api("POST", `/api/admin/users/${u.id}/enable`), `${u.username} is enabled.`)));
  }
  out.push(button("Reset password", async () => {
    if (!(await confirmDialog(`Give ${u.username} a new one-time password? Their sessions end.`, "Reset"))) return;
    const result = await act(() => api("POST", `/api/admin/users/${u.id}/reset-password`));
    if (held(result, `Resetting ${u.username}'s password`)) return;
    if (result) showSecret(`New one-time password for ${u.username}:`, result.one_time_password);
  }));
  out.push(button("Reset second factor", async () => {
    if (!(await confirmDialog(`Forget ${u.username}'s authenticator? They enrol again at next sign-in.`, "Reset"))) return;
    const result = await act(() => api("POST", `/api/admin/users/${u.id}/reset-totp`));
    if (!held(result, `Resetting ${u.username}'s second factor`) && result) toast(`${u.username} enrols again at next sign-in.`);
  }));
  if (u.locked_until) {
    out.push(button("Unlock", () => act(() => api("POST", `/api/admin/users/${u.id}/unlock`), `${u.username} is unlocked.`)));
  }
  if (u.role === "admin") {
    out.push(button("Make user", () => act(() => api("PATCH", `/api/admin/users/${u.id}`, { role: "user" }), `${u.username} is now a user.`)));
  } else if (!u.pending_admin) {
    out.push(button("Make admin", () => makeAdmin(u)));
  }
  out.push(button("Delete", async () => {
    if (!(await confirmDialog(`Delete ${u.username} and their conversations? This cannot be undone.`))) return;
    act(() => api("DELETE", `/api/admin/users/${u.id}`), `${u.username} deleted.`);
  }, "danger"));
  return out;
}

function groupCell(u) {
  const cell = el("td", { class: "user-groups", dataset: { label: "Groups" } });
  const list = el("ul", { class: "chips" });
  for (const g of u.groups) {
    list.append(el("li", {}, el("a", { href: `/admin/groups#group-${g.id}` }, g.name),
      el("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${u.username} from ${g.name}`, onclick: () =>
        act(() => api("DELETE", `/api/admin/groups/${g.id}/members/${u.id}`), `${u.username} left ${g.name}.`) }, "×")));
  }
  if (u.groups.length) cell.append(list);
  else cell.append(el("span", { class: "hint" }, "No groups"));
  const mine = new Set(u.groups.map((g) => g.id));
  const options = groups.filter((g) => !mine.has(g.id));
  if (options.length) {
    const select = el("select", { "aria-label": `Group to add ${u.username} to` },
      options.map((g) => el("option", { value: g.id }, g.name)));
    const form = el("form", { class: "inline compact" }, select,
      el("button", { type: "submit", "aria-label": `Add ${u.username} to the chosen group` }, "Add"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const group = groups.find((g) => g.id === select.value);
      const result = await act(() => api("POST", `/api/admin/groups/${select.value}/members`, { user_id: u.id }));
      if (!held(result, `Adding ${u.username} to ${group ? group.name : "the group"}`) && result) toast(`${u.username} joined ${group ? group.name : "the group"}.`);
    });
    cell.append(form);
  }
  return cell;
}

function roleCell(u) {
  if (!u.pending_admin) return el("td", { dataset: { label: "Role" } }, u.role);
  return el("td", { dataset: { label: "Role" } }, u.role, el("br"),
    el("a", { class: "pending", href: `/admin/approvals#approval-${u.pending_admin}` }, "admin: waiting for approval"));
}

async function load() {
  let users;
  try {
    [users, groups] = await Promise.all([api("GET", "/api/admin/users"), api("GET", "/api/admin/groups")]);
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  clear(tbody);
  for (const u of users) {
    const stateCell = el("td", { dataset: { label: "State" } }, u.is_active ? "active" : "disabled");
    if (u.locked_until) stateCell.append(", locked until ", timeEl(u.locked_until));
    if (u.must_change_password) stateCell.append(", must change password");
    tbody.append(el("tr", { id: `user-${u.id}`, dataset: { username: u.username } },
      el("th", { scope: "row" }, u.username),
      roleCell(u),
      groupCell(u),
      stateCell,
      el("td", { dataset: { label: "Second factor" } }, u.totp_enrolled ? "enrolled" : "not yet enrolled"),
      el("td", { dataset: { label: "Created" } }, timeEl(u.created_at)),
      el("td", { class: "actions" }, actions(u))));
  }
  if (location.hash) {
    const row = document.getElementById(location.hash.slice(1));
    if (row) row.classList.add("target");
  }
}

document.getElementById("create-user").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = document.getElementById("new-username");
  const role = document.getElementById("new-role").value;
  const result = await act(() => api("POST", "/api/admin/users", { username: name.value.trim(), role }));
  if (result) {
    showSecret(`One-time password for ${result.user.username}:`, result.one_time_password);
    if (result.approval_id) {
      tell(`${result.user.username} was created as a user: making them an admin needs a second admin's approval, and the request is in the approvals inbox.${result.waiting_note ? ` ${result.waiting_note}` : ""}`);
    }
    name.value = "";
  }
});

load();
