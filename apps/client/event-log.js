// The event log view: GET /api/events, oldest first, paged forward with next_after.

import { api } from "./api.js";

const PER_PAGE = 100;
// With batch items hidden, "Load more" skips pages of nothing but items, up to this many requests.
const MAX_SKIPPED_PAGES = 20;
// "Newest" walks forward at most this many pages of WALK_LIMIT before it shows what it has.
const MAX_WALK_PAGES = 20;
const WALK_LIMIT = 1000;
const HIDDEN_TYPE = "BatchItemStaged";
const $ = (id) => document.getElementById(id);

let loaded = []; // the events shown, oldest first
let cursor = null; // the id of the last event loaded: the next page starts after it
let atEnd = false;
let reload = loadOldest; // what Refresh does: the oldest or the newest page again
let generation = 0; // a newer load makes the answer of an older one moot
let scrollTo = null; // "top" or "bottom" after a new start; none after "Load more"

const hideItems = () => $("events-hide-items").checked;
const shortId = (id) => String(id ?? "").slice(0, 8);

function position(id) {
  const [ms, seq] = String(id).split("-").map(Number);
  return [ms, seq || 0];
}

export function summary(event) {
  const p = event.payload || {};
  switch (event.type) {
    case "KeyValueStored":
      return `${p.key} = ${p.value}`;
    case "BatchItemStaged":
      return `batch ${shortId(p.batch_id)} #${p.index}`;
    case "BatchRequested":
      return `batch ${shortId(p.batch_id)} · size ${p.size}`;
    case "BatchCommitted":
      return `batch ${shortId(p.batch_id)} · size ${p.size} · Done`;
    case "BatchFailed":
      return `batch ${shortId(p.batch_id)} · ${p.status}${p.detail ? ` · ${p.detail}` : ""}`;
    default:
      return JSON.stringify(p);
  }
}

function timeOf(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return { text: "", title: "" };
  const text = date.toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    fractionalSecondDigits: 3,
  });
  return { text, title: date.toISOString() };
}

function part(className, text, title) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  if (title) span.title = title;
  return span;
}

function eventRow(event) {
  const row = document.createElement("li");
  row.className = "event-row";
  row.dataset.testid = "event-row";
  row.dataset.eventId = event.id;
  row.dataset.type = event.type;
  const time = timeOf(event.time);
  const text = summary(event);
  row.append(
    part("event-id mono", event.id),
    part("event-type", event.type),
    part("event-time", time.text, time.title),
    part("event-summary mono", text.length > 160 ? `${text.slice(0, 160)}…` : text, text),
  );
  return row;
}

// A run of hidden batch items shows as one line: how many, of which batch, which indexes.
function hiddenRow(run) {
  const row = document.createElement("li");
  row.className = "event-row hidden-run";
  row.dataset.testid = "event-hidden";
  row.dataset.count = String(run.length);
  const batches = new Set(run.map((e) => e.payload?.batch_id));
  const indexes = run.map((e) => Number(e.payload?.index)).filter(Number.isFinite);
  const which =
    batches.size === 1
      ? `batch ${shortId([...batches][0])} #${Math.min(...indexes)}–#${Math.max(...indexes)}`
      : `${batches.size} batches`;
  const time = timeOf(run[run.length - 1].time);
  row.append(
    part("event-id mono", `${run.length.toLocaleString()} hidden`),
    part("event-type", `${HIDDEN_TYPE} ×${run.length.toLocaleString()}`),
    part("event-time", time.text, time.title),
    part("event-summary mono", which),
  );
  return row;
}

function render() {
  const rows = [];
  let run = [];
  const flush = () => {
    if (run.length) rows.push(hiddenRow(run));
    run = [];
  };
  for (const event of loaded) {
    if (hideItems() && event.type === HIDDEN_TYPE) {
      run.push(event);
      continue;
    }
    flush();
    rows.push(eventRow(event));
  }
  flush();
  $("events-list").replaceChildren(...rows);
  $("events-empty").hidden = loaded.length > 0;
  const hidden = hideItems() ? loaded.filter((e) => e.type === HIDDEN_TYPE).length : 0;
  const parts = [`${loaded.length.toLocaleString()} events`];
  if (hidden) parts.push(`${hidden.toLocaleString()} batch items hidden`);
  parts.push(atEnd ? "end of log" : "more after");
  $("events-page").textContent = parts.join(" · ");
  $("events-more").textContent = atEnd ? "Check for newer" : "Load more";
  const scroll = $("events-scroll");
  if (scrollTo === "top") scroll.scrollTop = 0;
  if (scrollTo === "bottom") scroll.scrollTop = scroll.scrollHeight; // the newest is at the bottom
  scrollTo = null;
}

function showError(error) {
  const element = $("events-error");
  element.hidden = !error;
  element.textContent = error ? (error.title ? `${error.title} — ${error.detail || ""}` : String(error)) : "";
}

// Runs one load at a time on behalf of a button; drops its answer if another load started since.
async function run(load) {
  const mine = ++generation;
  showError(null);
  const card = $("events-panel");
  card.setAttribute("aria-busy", "true");
  try {
    await load(() => mine === generation);
    if (mine === generation) render();
  } catch (error) {
    if (mine === generation) showError(error);
  } finally {
    if (mine === generation) card.removeAttribute("aria-busy");
  }
}

function take(events) {
  loaded = loaded.concat(events);
  if (events.length) cursor = events[events.length - 1].id;
}

async function more(current) {
  for (let pages = 0; pages < MAX_SKIPPED_PAGES; pages += 1) {
    const page = await api.events(cursor, PER_PAGE);
    if (!current()) return;
    take(page.events);
    atEnd = page.next_after === null;
    const showsSomething = page.events.some((e) => !hideItems() || e.type !== HIDDEN_TYPE);
    if (atEnd || showsSomething) return;
  }
}

async function loadOldest(current) {
  const page = await api.events(null, PER_PAGE);
  if (!current()) return;
  loaded = [];
  cursor = null;
  take(page.events);
  atEnd = page.next_after === null;
  scrollTo = "top";
}

// The API pages forward only; ids are "<ms>-<seq>", so look back in time (4× further each try)
// for a start that has a page's worth of events after it, then walk to the end.
async function loadNewest(current) {
  let page = await api.events(null, PER_PAGE);
  const now = Date.now();
  for (let back = 10_000; page.next_after !== null; back *= 4) {
    const from = now - back;
    if (from <= position(page.events[0].id)[0]) break; // back to the start of the log
    const tail = await api.events(`${from}-0`, PER_PAGE);
    if (tail.next_after !== null || !current()) {
      page = tail;
      break;
    }
  }
  let events = page.events;
  let next = page.next_after;
  for (let walked = 0; next !== null && walked < MAX_WALK_PAGES && current(); walked += 1) {
    const step = await api.events(next, WALK_LIMIT);
    events = events.concat(step.events).slice(-PER_PAGE);
    next = step.next_after;
  }
  if (!current()) return;
  loaded = [];
  cursor = null;
  take(events);
  atEnd = next === null;
  scrollTo = "bottom";
}

export function startEventLog() {
  $("events-refresh").addEventListener("click", () => run(reload));
  $("events-oldest").addEventListener("click", () => {
    reload = loadOldest;
    run(loadOldest);
  });
  $("events-newest").addEventListener("click", () => {
    reload = loadNewest;
    run(loadNewest);
  });
  $("events-more").addEventListener("click", () => run(more));
  $("events-hide-items").addEventListener("change", render);
  run(loadOldest);
}
