// On every page: the sign-out button.
import { api, toast } from "./api.js";

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
