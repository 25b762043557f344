// Sign-in and sign-out in the browser: the key is kept in this tab's sessionStorage for writes
// (Authorization header); the server sets and clears the HttpOnly cookie used for reads.
// See web/login.py for the decision.
"use strict";

const login = document.getElementById("login");
if (login) {
  login.addEventListener("submit", () => {
    sessionStorage.setItem("iotgw_api_key", document.getElementById("api_key").value.trim());
  });
}
const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("submit", () => sessionStorage.removeItem("iotgw_api_key"));
}
