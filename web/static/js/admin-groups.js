// Admin: groups and their members.
import { api, clear, confirmDialog, el, showError, toast } from "./api.js";

const box = document.getElementById("groups");
const errorBox = document.getElementById("groups-error");

async function act(work, message) {
  errorBox.hidden = true;
  try {
    const result = await work();
    if (message) toast(typeof message === "function" ? message(result) : message);
    await load();

  } catch (error) {
    showError(errorBox, error);
  }
}

function groupCard(group, users) {
  const members = el("ul", { class: "members" });
  if (!group.members.length) members.append(el("li", { class: "hint" }, "No members yet."));
  for (const m of group.members) {
    members.append(el("li", {}, m.username, " ",
      el("button", { type: "button", "aria-label": `Remove ${m.username} from ${group.name}`, onclick: () =>
        act(() => api("DELETE", `/api/admin/groups/${group.id}/members/${m.id}`), `${m.username} left ${group.name}.`) }, "Remove")));
  }
  const inGroup = new Set(group.members.map((m) => m.id));
  const select = el("select", { id: `add-${group.id}` },
    users.filter((u) => !inGroup.has(u.id)).map((u) => el("option", { value: u.id }, u.username)));
  const add = el("form", { class: "inline" },
    el("label", { for: `add-${group.id}` }, "Add member"), select,
    el("button", { type: "submit" }, "Add"));
  add.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!select.value) return;
    act(() => api("POST", `/api/admin/groups/${group.id}/members`, { user_id: select.value }),
      (result) => (result && result.status === "pending"
        ? `Held for a second admin: ${result.summary}. It is in the approvals inbox.${result.waiting_note ? ` ${result.waiting_note.replace(/`/g, "")}` : ""}`
        : "Member added."));
  });
  const remove = el("button", { type: "button", class: "danger", onclick: async () => {
    if (!(await confirmDialog(`Delete the group ${group.name}? Its grants stop applying at once.`))) return;
    act(() => api("DELETE", `/api/admin/groups/${group.id}`), `Group ${group.name} deleted.`);
  } }, "Delete group");
  return el("section", { class: "card group", id: `group-${group.id}`, dataset: { name: group.name }, "aria-label": `Group ${group.name}` },
    el("h2", {}, group.name), members, add, remove);
}

async function load() {
  let groups;
  let users;
  try {
    [groups, users] = await Promise.all([api("GET", "/api/admin/groups"), api("GET", "/api/admin/users")]);
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  clear(box);
  document.getElementById("groups-empty").hidden = groups.length > 0;
  for (const g of groups) box.append(groupCard(g, users));
  const target = location.hash && document.getElementById(location.hash.slice(1));
  if (target) {
    target.classList.add("target");
    target.scrollIntoView();
  }
}

document.getElementById("create-group").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = document.getElementById("new-group");
  act(async () => {
    await api("POST", "/api/admin/groups", { name: name.value.trim() });
    name.value = "";
  }, "Group created.");
});

load();
