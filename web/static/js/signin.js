// Sign-in: password -> code (or enrolment with QR and recovery codes) -> new password -> in.
import { api, clear, copyText, downloadText, el, showError, toast } from "./api.js";

// The key is shown in groups of four (spans: copying it gives the key without spaces).
function showKey(box, secret) {
  clear(box);
  for (let i = 0; i < secret.length; i += 4) box.append(el("span", { class: "key-group" }, secret.slice(i, i + 4)));
  box.setAttribute("aria-label", `Key: ${secret.match(/.{1,4}/g).join(" ")}`);
}

function codesText() {
  const codes = [...document.querySelectorAll("#recovery-codes code")].map((c) => c.textContent);
  const user = document.getElementById("username").value.trim();
  return `Recovery codes${user ? ` for ${user}` : ""} (${location.host}), each works once:\n\n${codes.join("\n")}\n`;
}

const card = document.querySelector(".signin");
const errorBox = document.getElementById("signin-error");
const title = document.getElementById("signin-title");
const steps = ["step-password", "step-totp", "step-enrol", "step-recovery", "step-newpassword"];
let oneTimePassword = "";
let afterRecovery = null;

function show(id, heading) {
  for (const step of steps) document.getElementById(step).hidden = step !== id;
  title.textContent = heading;
  errorBox.hidden = true;
  const first = document.getElementById(id).querySelector("input, button");
  if (first) first.focus();
}

function next(result) {
  switch (result.stage) {
    case "totp":
      show("step-totp", "Second factor");
      break;
    case "enrol":
      document.getElementById("enrol-qr").src =
        `data:image/svg+xml;charset=utf-8,${encodeURIComponent(result.enrolment.qr_svg)}`;
      showKey(document.getElementById("enrol-secret"), result.enrolment.secret);
      show("step-enrol", "Set up your authenticator");
      break;
    case "password":
      show("step-newpassword", "Choose your password");
      break;
    case "done":
      location.assign(card.dataset.next || "/");
      break;
    default:
      showError(errorBox, "Unexpected answer from the server. Reload the page.");
  }
}

async function submit(form, work, failed = null) {
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  errorBox.hidden = true;
  try {
    await work();
  } catch (error) {
    showError(errorBox, error);
    if (failed) failed();
    else errorBox.focus();
  } finally {
    button.disabled = false;
  }
}

document.getElementById("step-password").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  submit(form, async () => {
    oneTimePassword = form.password.value;
    const result = await api("POST", "/api/auth/login", {
      username: form.username.value.trim(),
      password: form.password.value,
    });
    form.password.value = "";
    next(result);
  });
});

document.getElementById("step-totp").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  submit(form, async () => {
    const recovery = form.recovery_code.value.trim();
    const body = recovery ? { recovery_code: recovery } : { code: form.code.value.replace(/\s/g, "") };
    const result = await api("POST", "/api/auth/totp", body);
    form.code.value = "";
    form.recovery_code.value = "";
    next(result);
  }, () => {
    // A wrong code: the box is cleared for the next one, and the error is read out.
    const box = form.recovery_code.value.trim() ? form.recovery_code : form.code;
    box.value = "";
    box.focus();
  });
});

document.getElementById("step-enrol").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  submit(form, async () => {
    const result = await api("POST", "/api/auth/enrol/confirm", {
      code: form.code.value.replace(/\s/g, ""),
    });
    form.code.value = "";
    form.code.value = "";
    const list = clear(document.getElementById("recovery-codes"));
    for (const code of result.recovery_codes || []) list.append(el("li", {}, el("code", {}, code)));
    afterRecovery = result;
    show("step-recovery", "Store your recovery codes");
  });
});

document.getElementById("recovery-copy").addEventListener("click", async () => {
  const codes = [...document.querySelectorAll("#recovery-codes code")].map((c) => c.textContent);
  toast((await copyText(codes.join("\n"))) ? "Recovery codes copied." : "Copy failed: select them by hand.");
});

document.getElementById("recovery-print").addEventListener("click", () => window.print());

document.getElementById("recovery-download").addEventListener("click", () => {
  downloadText("recovery-codes.txt", codesText());
});

document.getElementById("recovery-done").addEventListener("click", () => next(afterRecovery));

document.getElementById("step-newpassword").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const first = document.getElementById("new-password");
  const again = document.getElementById("new-password-again");
  if (first.value !== again.value) {
    showError(errorBox, "The two passwords differ. Type the same password twice.");
    return;
  }
  submit(form, async () => {
    const result = await api("POST", "/api/auth/password", { old: oneTimePassword, new: first.value });
    oneTimePassword = "";
    next(result);
  });
});
