// The dead-letter panel: GET /api/dead, and requeue or drop one (or requeue all).

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

function showError(error) {
  const element = $("dead-error");
  element.hidden = !error;
  element.textContent = error ? `${error.title || "Error"} — ${error.detail || ""}` : "";
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function action(label, testid, run) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.textContent = label;
  button.dataset.testid = testid;
  button.addEventListener("click", () => act(run));
  return button;
}

function row(letter) {
  const tr = document.createElement("tr");
  tr.dataset.testid = "dead-row";
  tr.dataset.id = letter.id;
  const buttons = document.createElement("td");
  buttons.append(
    action("Requeue", "dead-requeue", () => api.requeueDead([letter.id])),
    action("Drop", "dead-drop", () => api.dropDead([letter.id])),
  );
  tr.append(
    cell(letter.channel),
    cell((letter.dead_at || "").replace("T", " ").slice(0, 23), "mono"),
    cell(letter.deliveries ?? ""),
    cell(letter.reason),
    cell(letter.preview, "mono"),
    buttons,
  );
  return tr;
}

async function refresh() {
  try {
    const found = await api.deadLetters();
    showError(null);
    $("dead-counts").textContent = Object.entries(found.counts)
      .map(([channel, count]) => `${channel} ${count}`)
      .join(" · ");
    $("dead-list").replaceChildren(...found.letters.map(row));
    $("dead-empty").hidden = found.letters.length > 0;
  } catch (error) {
    showError(error);
  }
}

async function act(run) {
  try {
    await run();
  } catch (error) {
    showError(error);
    return;
  }
  await refresh();
}

export function startDeadLetters() {
  $("dead-refresh").addEventListener("click", refresh);
  $("dead-requeue-all").addEventListener("click", () => act(() => api.requeueDead(null)));
  refresh();
}
