import { api } from "./api.js";
import { h } from "./format.js";

export function renderLogin(view, { onLogin }) {
  const error = h("p", { class: "error-text", role: "alert" });
  const userInput = h("input", { name: "user", autocomplete: "username", required: true, autofocus: true });
  const passInput = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit" }, "Log in");
  const form = h("form", { id: "login-form" },
    h("label", {}, "User", userInput),
    h("label", {}, "Password", passInput),
    submit, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      const session = await api.login(userInput.value.trim(), passInput.value);
      onLogin(session.user);
    } catch (err) {
      error.textContent = err.message;
      passInput.select();
    } finally {
      submit.disabled = false;
    }
  });
  view.append(h("section", { class: "login panel" }, h("h1", {}, "Log in to Corral"), form));
  userInput.focus();
  return null;
}
