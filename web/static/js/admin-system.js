// Admin: the kill switch (pause answering, pause ingestion, read-only), with a reason users see.
import { api, clear, el, formatWhen, showError, timeEl, toast } from "./api.js";

const SWITCHES = {
  answering_paused: ["Pause answering", "Questions get a maintenance message, with your reason, instead of an answer."],
  ingestion_paused: ["Pause ingestion", "Uploads still queue; the worker starts no new document."],
  read_only: ["Read-only", "Every change is refused (questions too), except signing in and out and this switch."],
};
const list = document.getElementById("switches");
const errorBox = document.getElementById("switch-error");
const reasonBox = document.getElementById("switch-reason");
const backBox = document.getElementById("switch-back-by");
let state = null;

function render(switches) {
  state = switches;
  clear(list);
  for (const [name, [title, help]] of Object.entries(SWITCHES)) {
    const s = switches[name];
    const box = el("input", { type: "checkbox", id: `sw-${name}`, name, "aria-describedby": `sw-${name}-help` });
    box.checked = s.on;
    const last = s.changed_at
      ? [" Last changed by ", s.changed_by || "unknown", ", ", timeEl(s.changed_at), s.reason ? `: ${s.reason}` : "", "."]
      : [];
    const back = s.on && s.back_by ? [" Back by ", timeEl(s.back_by), "."] : [];
    list.append(el("li", {}, box,
      el("div", {},
        el("label", { for: `sw-${name}` }, title, s.on ? el("span", { class: "switch-on" }, " — ON") : null),
        el("p", { class: "hint", id: `sw-${name}-help` }, help, ...last, ...back))));
  }
}

document.getElementById("switch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  reasonBox.removeAttribute("aria-invalid");
  const body = {};
  for (const box of list.querySelectorAll("input[type=checkbox]")) {
    if (box.checked !== state[box.name].on) body[box.name] = box.checked;
  }
  if (!Object.keys(body).length) {
    toast("Nothing changed.");
    return;
  }
  const reason = reasonBox.value.trim();
  const turningOn = Object.values(body).some((on) => on);
  if (!reason && turningOn) {
    reasonBox.setAttribute("aria-invalid", "true");
    showError(errorBox, "Give a reason: other admins see it, and users see it while the service is paused.");
    reasonBox.focus();
    return;
  }
  if (reason) body.reason = reason;
  if (backBox.value && turningOn) {
    const back = new Date(backBox.value);
    body.back_by = back.toISOString();
  }
  try {
    render(await api("PUT", "/api/admin/system/switches", body));
    reasonBox.value = "";
    backBox.value = "";
    const until = body.back_by ? ` Users see: back by ${formatWhen(body.back_by)}.` : "";
    toast(`Switches applied.${until}`);
  } catch (error) {
    showError(errorBox, error);
  }
});

try {
  render(await api("GET", "/api/admin/system/switches"));
} catch (error) {
  showError(errorBox, error);
}
