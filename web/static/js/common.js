// On every page: the sign-out button, and server-rendered times in the reader's zone.
import { api, formatWhen, toast } from "./api.js";

const signOut = document.getElementById("sign-out");
if (signOut) {
  signOut.addEventListener("click", async () => {
    try {
      await api("POST", "/api/auth/logout");
    } catch (error) {
      if (error.status !== 401) {
        toast(error.message);
        return;
      }
    }
    location.assign("/signin");
  });
}

// Times the server rendered (in UTC) are shown in the reader's own time zone.
for (const node of document.querySelectorAll("time[datetime]")) {
  const text = formatWhen(node.getAttribute("datetime"));
  if (text) node.textContent = text;
}
