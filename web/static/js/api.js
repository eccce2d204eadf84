// Shared helpers: JSON API calls with the CSRF header, and DOM building with text only.
// Nothing here ever assigns untrusted strings to innerHTML.

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-cookie"]');
  const name = meta ? meta.content : "__Host-csrf";
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

export function headers(method, extra = {}) {
  const out = { Accept: "application/json", ...extra };
  if (UNSAFE.has(method)) out["X-CSRF-Token"] = csrfToken();
  return out;
}

function messageOf(status, body) {
  if (body && typeof body.message === "string") return body.message;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  if (status === 401) return "Your session has ended. Sign in again.";
  if (status === 0) return "The appliance cannot be reached. Check the network and try again.";
  return `The request failed (HTTP ${status}). Try again; if it keeps failing, tell an administrator.`;
}

export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  // The session is gone (expired, ended elsewhere): sign in again, then come back. A wrong
  // password (sign_in_failed, e.g. when changing it) is shown where it happened instead.
  const sessionGone = response.status === 401 && (!body || body.error === "not_authenticated");
  if (sessionGone && !location.pathname.startsWith("/signin")) {
    location.assign(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  return new ApiError(response.status, messageOf(response.status, body), body && body.error);
}

export async function api(method, url, body) {
  const init = { method, headers: headers(method), credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, messageOf(0, null));
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// el("p", {class: "x", onclick: fn}, "text", child) — children are Nodes or strings (text).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

// Save `text` as a file called `filename` (recovery codes, for instance), from the page.
export function downloadText(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const link = el("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// The one time format of the site ("3 Dec 2026, 14:05", the reader's time zone).
export function when(iso) {
  return formatWhen(iso);
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function toast(message) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = message;
  box.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("show"), 4000);
}

export function showError(box, error) {
  box.textContent = error instanceof Error ? error.message : String(error);
  box.hidden = false;
}

// A small modal confirmation on <dialog> (never window.confirm: it blocks and is unstyled).
export function confirmDialog(question, action = "Delete") {
  return new Promise((resolve) => {
    const yes = el("button", { type: "button", class: "danger" }, action);
    const no = el("button", { type: "button" }, "Cancel");
    const dialog = el("dialog", { class: "confirm", "aria-label": question },
      el("p", {}, question), el("div", { class: "actions" }, no, yes));
    const done = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    yes.addEventListener("click", () => done(true));
    no.addEventListener("click", () => done(false));
    dialog.addEventListener("cancel", () => done(false));
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

// Copy text; navigator.clipboard needs a secure context (https or localhost).
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return true;
  }
  const area = el("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  return ok;
}

// The site's one time format, in the reader's time zone: "3 Dec 2026, 14:05".
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

export function formatWhen(iso) {
  if (!iso) return "";
  const d = iso instanceof Date ? iso : new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()}, ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// A <time> element: the readable form as text, the ISO value in its datetime attribute.
export function timeEl(iso, empty = "") {
  if (!iso) return document.createTextNode(empty);
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return document.createTextNode(String(iso));
  return el("time", { datetime: d.toISOString() }, formatWhen(d));
}

// A link to an admin page when the server gave one (hrefs are site-local), else plain text.
export function labelEl(label) {
  if (!label) return document.createTextNode("");
  const href = typeof label.href === "string" && label.href.startsWith("/") && !label.href.startsWith("//") ? label.href : null;
  return href ? el("a", { href }, label.text) : document.createTextNode(label.text);
}

// Text with `backticked` commands as <code> nodes (the rest as text).
export function ticksEl(text, tag = "span", attrs = {}) {
  return el(tag, attrs, String(text || "").split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part)));
}
