// Admin: the approvals inbox — approve (runs once) or reject another admin's held action.
import { api, clear, el, labelEl, showError, ticksEl, timeEl, toast } from "./api.js";

const tbody = document.getElementById("approvals");
const errorBox = document.getElementById("approvals-error");
const filter = document.getElementById("approval-status");
const me = document.body.dataset.username;
// The page says it once when nobody else can approve; then the rows need not repeat it.
const pageNote = document.getElementById("second-admin-note");

const STATUS = { pending: "Waiting", approved: "Approved", rejected: "Rejected", expired: "Expired" };

// The action in words, with links to the people, groups and documents it is about.
function describe(r) {
  const links = (r.about || []).filter((a) => a.href);
  return [
    el("strong", {}, r.summary || r.kind),
    links.length ? el("p", { class: "hint about" }, "See ", links.flatMap((a, i) => [i ? ", " : "", labelEl(a)])) : null,
    r.reason ? el("p", { class: "hint" }, `Reason: ${r.reason}`) : null,
    r.status === "pending" && r.waiting_note && !pageNote ? ticksEl(r.waiting_note, "p", { class: "answer-note" }) : null,
  ];
}

async function decide(r, verb) {
  errorBox.hidden = true;
  try {
    await api("POST", `/api/admin/approvals/${r.id}/${verb}`);
    toast(verb === "approve" ? "Approved: the action ran." : "Rejected: nothing ran.");
    load();
  } catch (error) {
    showError(errorBox, error);
  }
}

async function load() {
  const status = filter.value;
  let rows;
  try {
    rows = await api("GET", `/api/admin/approvals${status ? `?status=${status}` : ""}`);
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  clear(tbody);
  document.getElementById("approvals-empty").hidden = rows.length > 0;
  for (const r of rows) {
    const actions = el("td", { class: "actions" });
    if (r.status === "pending") {
      if (r.requester !== me) {
        actions.append(el("button", { type: "button", class: "primary", "aria-label": `Approve: ${r.summary}`, onclick: () => decide(r, "approve") }, "Approve"));
      }
      const verb = r.requester === me ? "Withdraw" : "Reject";
      actions.append(el("button", { type: "button", "aria-label": `${verb}: ${r.summary}`, onclick: () => decide(r, "reject") }, verb));
    }
    const row = el("tr", { id: `approval-${r.id}`, dataset: { kind: r.kind } },
      el("td", {}, describe(r)),
      el("td", { dataset: { label: "Asked by" } }, r.requester, el("br"), el("span", { class: "hint" }, timeEl(r.created_at))),
      el("td", { dataset: { label: "Status" } }, STATUS[r.status] || r.status, r.decided_by ? ` by ${r.decided_by}` : ""),
      el("td", { dataset: { label: "Expires" } }, timeEl(r.expires_at)),
      actions);
    if (location.hash === `#approval-${r.id}`) row.classList.add("target");
    tbody.append(row);
  }
}

filter.addEventListener("change", load);
load();
