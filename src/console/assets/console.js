// bentogate console: the only script. Core forms work without it; it adds copy-to-clipboard,
// a confirmation dialog for Delete, and submits the hand-off form of an old CLI's login.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      if (!field) return;
      try {
        await navigator.clipboard.writeText(field.value);
      } catch (_) {
        field.select();
        document.execCommand("copy");
      }
      button.textContent = "Copied";
    });
  }
  for (const link of document.querySelectorAll("a[data-confirm]")) {
    link.addEventListener("click", (event) => {
      const dialog = document.getElementById("confirm-dialog");
      if (!dialog || typeof dialog.showModal !== "function") return;
      event.preventDefault();
      dialog.querySelector("p").textContent = link.dataset.confirm;
      dialog.querySelector("form").action = link.href;
      dialog.showModal();
    });
  }
  // An old bentoml CLI waits on a loopback port for the token. Send it with fetch (its server
  // answers CORS) so this page can say what happened; if that fails, post the form itself.
  const handoff = document.querySelector("form[data-autosubmit]");
  if (handoff) {
    fetch(handoff.action, { method: "POST", body: new URLSearchParams(new FormData(handoff)) })
      .then((answer) => {
        if (!answer.ok) throw new Error(String(answer.status));
        handoff.hidden = true;
        document.getElementById("handoff-done").hidden = false;
      })
      .catch(() => handoff.submit());
  }
});
