// Admin: the kill switch (pause answering, pause ingestion, read-only).
import { api, clear, el, showError, toast, when } from "./api.js";

const SWITCHES = {
  answering_paused: ["Pause answering", "Questions get a maintenance message instead of an answer."],
  ingestion_paused: ["Pause ingestion", "Uploads still queue; the worker starts no new document."],
  read_only: ["Read-only", "Every change is refused (questions too), except signing in and out and this switch."],
};
const list = document.getElementById("switches");
const errorBox = document.getElementById("switch-error");
let state = null;

function render(switches) {
  state = switches;
  clear(list);
  for (const [name, [title, help]] of Object.entries(SWITCHES)) {
    const s = switches[name];
    const box = el("input", { type: "checkbox", id: `sw-${name}`, name, "aria-describedby": `sw-${name}-help` });
    box.checked = s.on;
    const last = s.changed_at ? ` Last changed by ${s.changed_by || "unknown"}, ${when(s.changed_at)}${s.reason ? `: ${s.reason}` : ""}.` : "";
    list.append(el("li", {}, box,
      el("div", {},
        el("label", { for: `sw-${name}` }, title, s.on ? el("span", { class: "switch-on" }, " — ON") : null),
        el("p", { class: "hint", id: `sw-${name}-help` }, help + last))));
  }
}

document.getElementById("switch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  const body = {};
  for (const box of list.querySelectorAll("input[type=checkbox]")) {
    if (box.checked !== state[box.name].on) body[box.name] = box.checked;
  }
  if (!Object.keys(body).length) {
    toast("Nothing changed.");
    return;
  }
  body.reason = document.getElementById("switch-reason").value.trim() || null;
  try {
    render(await api("PUT", "/api/admin/system/switches", body));
    toast("Switches applied.");
  } catch (error) {
    showError(errorBox, error);
  }
});

try {
  render(await api("GET", "/api/admin/system/switches"));
} catch (error) {
  showError(errorBox, error);
}
