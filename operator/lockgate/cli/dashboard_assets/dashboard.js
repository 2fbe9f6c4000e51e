// lockgate dashboard: keeps a server-rendered page live and confirms actions.
// No build step, no library. The server sends HTML it rendered and escaped itself; this file
// only puts it in place. Without JavaScript the pages still work (forms post to a
// confirmation page).
"use strict";

(function () {
  const main = document.querySelector("main[data-events]");
  const state = document.getElementById("live-state");
  const result = document.getElementById("result");
  const sent = {};
  let updates = 0;

  function say(text, ok) {
    if (!result) return;
    const p = document.createElement("p");
    p.className = ok ? "ok" : "error";
    p.textContent = text;
    result.replaceChildren(p);
  }

  if (main && window.EventSource) {
    const source = new EventSource(main.dataset.events);
    source.addEventListener("open", function () {
      if (state) state.textContent = "live";
    });
    source.addEventListener("error", function () {
      if (state) state.textContent = "reconnecting";
    });
    source.addEventListener("update", function (event) {
      const parts = JSON.parse(event.data);
      for (const key of Object.keys(parts)) {
        if (sent[key] === parts[key]) continue;
        const box = document.querySelector('[data-live="' + key + '"]');
        if (!box) continue;
        // Keep keyboard focus on the same control when its section is replaced.
        const focused = box.contains(document.activeElement)
          ? document.activeElement.getAttribute("data-action")
          : null;
        box.innerHTML = parts[key];
        sent[key] = parts[key];
        if (focused) {
          const again = box.querySelector('[data-action="' + focused + '"]');
          if (again) again.focus();
        }
      }
      updates += 1;
      document.body.dataset.updates = String(updates);
      if (state) state.textContent = "live";
    });
    source.addEventListener("problem", function (event) {
      say(JSON.parse(event.data).message, false);
    });
  }

  const dialog = document.getElementById("confirm");
  let pending = null;

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("action")) return;
    if (!dialog || typeof dialog.showModal !== "function") return; // the server confirms
    event.preventDefault();
    pending = form;
    document.getElementById("confirm-text").textContent = form.dataset.confirm;
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-no").focus();
  });

  if (dialog) {
    dialog.addEventListener("close", function () {
      const form = pending;
      pending = null;
      if (form && dialog.returnValue === "yes") send(form);
    });
  }

  async function send(form) {
    const body = new URLSearchParams(new FormData(form));
    body.set("confirmed", "1");
    say("sending " + body.get("action") + "...", true);
    try {
      const answer = await fetch(form.getAttribute("action"), {
        method: "POST",
        body: body,
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const data = await answer.json();
      say(data.message, Boolean(data.ok));
    } catch (err) {
      say("the dashboard did not answer: " + err, false);
    }
  }
})();
