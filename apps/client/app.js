// The msarch web client: roundtrips with live echo and latency, batches, stored batches,
// the event log, the dead letters and the live architecture view.

import { api, apiKey, setApiKey, traceIdOf } from "./api.js";
import { startDeadLetters } from "./dead-letters.js";
import { startEventLog } from "./event-log.js";
import { LiveSocket } from "./live-socket.js";
import { noteTrace, startLiveView } from "./live-view.js";

const BATCHES_PER_PAGE = 10;
const VALUES_PER_PAGE = 50;
const MAX_ROWS = 100;
const $ = (id) => document.getElementById(id);

function showProblem(element, error) {
  if (!error) {
    element.hidden = true;
    element.textContent = "";
    return;
  }
  element.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = error.title || "Error";
  element.append(title);
  const detail = error.detail || (error.title ? "" : String(error.message || error));
  if (detail) element.append(` — ${detail}`);
  element.hidden = false;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function timeOf(iso) {
  const date = iso ? new Date(iso) : new Date();
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
}

// -- connection status --------------------------------------------------------

let countdown = null;

function showConnection(state, delayMs) {
  const status = $("conn-status");
  clearInterval(countdown);
  status.dataset.state = state;
  if (state === "open") status.textContent = "Live";
  else if (state === "connecting") status.textContent = "Connecting…";
  else {
    const until = Date.now() + delayMs;
    // The countdown is hidden from screen readers: "Offline" is announced once, not every second.
    const retry = document.createElement("span");
    retry.setAttribute("aria-hidden", "true");
    status.replaceChildren("Offline", retry);
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      retry.textContent = ` · retry in ${seconds} s`;
    };
    tick();
    countdown = setInterval(tick, 1000);
  }
}

// -- roundtrips: sent ones wait for their echo, matched by id -------------------

const waiting = new Map(); // id -> {sentAt, row}
const early = new Map(); // id -> arrivedAt, for an echo that beat the POST's answer

function addRoundtripRow(frame) {
  const row = document.createElement("tr");
  row.dataset.id = frame.id;
  row.append(cell(frame.key, "mono"), cell(frame.value, "mono"));
  const latency = cell("…", "latency");
  latency.dataset.testid = "rt-latency";
  row.append(latency, cell(timeOf(frame.accepted_at)));
  const list = $("rt-list");
  list.prepend(row);
  while (list.rows.length > MAX_ROWS) list.deleteRow(-1);
  $("rt-empty").hidden = true;
  return row;
}

function showLatency(row, ms) {
  const latency = row.querySelector(".latency");
  latency.textContent = `${ms.toFixed(1)} ms`;
  row.classList.add("arrived");
}

// The server's word that some roundtrips since this page last saw one were trimmed from the
// log: they are not coming, and the list below lacks them.
function showGap(frame) {
  showProblem($("rt-gap"), {
    title: "Some roundtrips are no longer in the event log",
    detail: frame.detail || `events after ${frame.after} were trimmed`,
  });
  $("rt-gap").dataset.oldestEventId = frame.oldest_event_id ?? "";
}

function onFrame(frame) {
  if (frame?.type === "gap") {
    showGap(frame);
    return;
  }
  if (!frame || typeof frame.id !== "string") return;
  noteTrace(frame);
  const arrivedAt = performance.now();
  const mine = waiting.get(frame.id);
  if (mine) {
    waiting.delete(frame.id);
    mine.row.lastChild.textContent = timeOf(frame.accepted_at);
    showLatency(mine.row, arrivedAt - mine.sentAt);
    return;
  }
  if (document.querySelector(`#rt-list tr[data-id="${CSS.escape(frame.id)}"]`)) return;
  early.set(frame.id, arrivedAt);
  if (early.size > MAX_ROWS) early.delete(early.keys().next().value);
  const row = addRoundtripRow(frame);
  row.querySelector(".latency").textContent = "from elsewhere";
  row.classList.add("arrived");
}

async function sendRoundtrip(event) {
  event.preventDefault();
  const key = $("rt-key").value;
  const value = $("rt-value").value;
  showProblem($("rt-error"), null);
  $("rt-send").disabled = true;
  const sentAt = performance.now();
  try {
    const accepted = await api.roundtrip(key, value);
    const arrivedAt = early.get(accepted.id);
    const existing = document.querySelector(`#rt-list tr[data-id="${CSS.escape(accepted.id)}"]`);
    if (arrivedAt !== undefined && existing) {
      early.delete(accepted.id);
      showLatency(existing, arrivedAt - sentAt);
    } else {
      waiting.set(accepted.id, { sentAt, row: addRoundtripRow({ ...accepted, accepted_at: null }) });
    }
    $("rt-key").select();
  } catch (error) {
    showProblem($("rt-error"), error);
  } finally {
    $("rt-send").disabled = false;
  }
}

// -- batches ----------------------------------------------------------------------

async function sendBatch(event) {
  event.preventDefault();
  const size = Number($("batch-size").value);
  showProblem($("batch-error"), null);
  $("batch-send").disabled = true;
  $("batch-send").textContent = "Sending…";
  try {
    const done = await api.batch(size);
    noteTrace({ key: `batch of ${size}`, trace_id: traceIdOf(done) });
    showBatchResult(done.status, done.elapsed_ms, done.batch_id);
    batchesOffset = 0;
    await loadBatches(done.batch_id);
  } catch (error) {
    showProblem($("batch-error"), error);
    const body = error.body || {};
    if (body.batch_status) showBatchResult(body.batch_status, body.elapsed_ms, body.batch_id);
    else $("batch-result").hidden = true;
  } finally {
    $("batch-send").disabled = false;
    $("batch-send").textContent = "Send batch";
  }
}

function showBatchResult(status, elapsedMs, batchId) {
  const badge = $("batch-status");
  badge.textContent = status;
  badge.dataset.status = status;
  $("batch-elapsed").textContent = elapsedMs === undefined ? "—" : `${elapsedMs} ms`;
  $("batch-id").textContent = batchId || "—";
  $("batch-result").hidden = false;
}

let batchesOffset = 0;

async function loadBatches(highlight) {
  showProblem($("batches-error"), null);
  try {
    // One more than a page tells whether there is an older page.
    const ids = await api.batchKeys(batchesOffset, BATCHES_PER_PAGE + 1);
    const list = $("batches-list");
    list.replaceChildren(
      ...ids.slice(0, BATCHES_PER_PAGE).map((id) => batchButton(id, id === highlight)),
    );
    $("batches-empty").hidden = ids.length > 0 || batchesOffset > 0;
    $("batches-prev").disabled = batchesOffset === 0;
    $("batches-next").disabled = ids.length <= BATCHES_PER_PAGE;
    $("batches-page").textContent = `Page ${batchesOffset / BATCHES_PER_PAGE + 1}`;
  } catch (error) {
    showProblem($("batches-error"), error);
  }
}

function batchButton(id, isNew) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "batch-item mono";
  button.dataset.batchId = id;
  button.dataset.testid = "batch-item";
  button.textContent = id;
  button.setAttribute("aria-label", `Show the key/values of batch ${id}`);
  if (isNew) button.classList.add("new");
  if (id === valuesBatch) button.setAttribute("aria-current", "true");
  button.addEventListener("click", () => openBatch(id));
  item.append(button);
  return item;
}

// -- the key/values of one batch ----------------------------------------------------

let valuesBatch = null;
let valuesOffset = 0;
let valuesSize = null;

async function openBatch(id) {
  valuesBatch = id;
  valuesOffset = 0;
  valuesSize = null;
  for (const button of document.querySelectorAll(".batch-item")) {
    button.toggleAttribute("aria-current", button.dataset.batchId === id);
  }
  $("values-panel").hidden = false;
  $("values-batch").textContent = id;
  try {
    valuesSize = (await api.batchInfo(id)).size;
  } catch {
    valuesSize = null; // the page still works without the total
  }
  await loadValues();
  $("values-panel").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

async function loadValues() {
  showProblem($("values-error"), null);
  const id = valuesBatch;
  try {
    const items = await api.batchValues(id, valuesOffset, VALUES_PER_PAGE + 1);
    if (id !== valuesBatch) return; // another batch was chosen meanwhile
    const rows = items.slice(0, VALUES_PER_PAGE).map((item, i) => {
      const row = document.createElement("tr");
      row.append(cell(String(valuesOffset + i), "index"), cell(item.key, "mono"));
      row.append(cell(item.value, "mono"));
      return row;
    });
    $("values-list").replaceChildren(...rows);
    const last = valuesOffset + rows.length;
    const total = valuesSize === null ? "" : ` of ${valuesSize.toLocaleString()}`;
    $("values-range").textContent = rows.length
      ? `${(valuesOffset + 1).toLocaleString()}–${last.toLocaleString()}${total}`
      : "empty";
    $("values-prev").disabled = valuesOffset === 0;
    $("values-next").disabled = items.length <= VALUES_PER_PAGE;
  } catch (error) {
    showProblem($("values-error"), error);
  }
}

// -- start ---------------------------------------------------------------------------

function start() {
  $("rt-form").addEventListener("submit", sendRoundtrip);
  $("batch-form").addEventListener("submit", sendBatch);
  $("batches-refresh").addEventListener("click", () => loadBatches());
  $("batches-prev").addEventListener("click", () => {
    batchesOffset = Math.max(0, batchesOffset - BATCHES_PER_PAGE);
    loadBatches();
  });
  $("batches-next").addEventListener("click", () => {
    batchesOffset += BATCHES_PER_PAGE;
    loadBatches();
  });
  $("values-prev").addEventListener("click", () => {
    valuesOffset = Math.max(0, valuesOffset - VALUES_PER_PAGE);
    loadValues();
  });
  $("values-next").addEventListener("click", () => {
    valuesOffset += VALUES_PER_PAGE;
    loadValues();
  });
  const key = $("api-key");
  key.value = apiKey();
  key.addEventListener("change", () => setApiKey(key.value.trim()));

  // Browsers cannot set headers on a websocket: the key goes in the query instead.
  const query = () => (apiKey() ? { api_key: apiKey() } : {});
  const live = new LiveSocket({ onFrame, onState: showConnection, query });
  live.connect();
  // For the browser test (and the curious): drop the connection, count frames and duplicates.
  window.msarchLive = live;
  loadBatches();
  startEventLog();
  startDeadLetters();
  startLiveView();
}

start();
