// The live architecture view: the seed's flow as an SVG diagram fed by /api/live/stream
// (a snapshot a second), and the waterfall of a recent roundtrip's trace (/api/traces/{id}).

import { api, apiKey } from "./api.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const MAX_TRACES = 20;

// Where each box sits in the 1100 × 470 diagram.
const SERVICES = {
  clients: { x: 10, y: 10, label: "clients" },
  gateway: { x: 10, y: 190, label: "gateway" },
  websocket: { x: 240, y: 10, label: "websocket" },
  roundtrip: { x: 240, y: 150, label: "roundtrip" },
  batch: { x: 240, y: 330, label: "batch" },
  store: { x: 720, y: 170, label: "store" },
};
const CHANNELS = {
  forward_roundtrip: { x: 490, y: 40 },
  event: { x: 490, y: 160 },
  batch: { x: 490, y: 330 },
  batch_reply: { x: 490, y: 410 },
};
const BOX_W = 180;
const PILL_W = 170;
const PILL_H = 46;

// Each arrow: from, to (boxes or channel pills) and what lights it: a channel's rate.
const ARROWS = [
  { from: "clients", to: "gateway", channel: "event", rate: "out_per_s" },
  { from: "gateway", to: "roundtrip", channel: "event", rate: "out_per_s" },
  { from: "roundtrip", to: "ch:event", channel: "event", rate: "out_per_s" },
  { from: "ch:event", to: "store", channel: "event", rate: "in_per_s" },
  { from: "store", to: "redis", channel: "event", rate: "in_per_s" },
  { from: "store", to: "ch:forward_roundtrip", channel: "forward_roundtrip", rate: "out_per_s" },
  { from: "ch:forward_roundtrip", to: "websocket", channel: "forward_roundtrip", rate: "in_per_s" },
  { from: "websocket", to: "clients", channel: "forward_roundtrip", rate: "in_per_s" },
  { from: "gateway", to: "batch", channel: "batch", rate: "out_per_s" },
  { from: "batch", to: "ch:batch", channel: "batch", rate: "out_per_s" },
  { from: "ch:batch", to: "store", channel: "batch", rate: "in_per_s" },
  { from: "store", to: "ch:batch_reply", channel: "batch_reply", rate: "out_per_s" },
  { from: "ch:batch_reply", to: "batch", channel: "batch_reply", rate: "in_per_s" },
];

function el(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function number(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

// -- boxes ------------------------------------------------------------------------------

function serviceState(instances) {
  if (!instances.length) return "down";
  return instances.every((i) => i.state === "up") ? "up" : "down";
}

function latencyLines(instances) {
  const lines = [];
  for (const instance of instances) {
    for (const [channel, figures] of Object.entries(instance.channels || {})) {
      if (figures.p50_ms === null || figures.p50_ms === undefined) continue;
      lines.push(`${channel} ${number(figures.p50_ms)}/${number(figures.p99_ms)} ms`);
    }
  }
  return lines;
}

function serviceBox(name, place, instances) {
  const lines = name === "clients" ? [] : latencyLines(instances);
  const height = 26 + 16 * Math.max(instances.length, 1) + 14 * lines.length + 6;
  const state = name === "clients" ? "up" : serviceState(instances);
  const box = el("g", {
    class: "live-box",
    "data-testid": "live-service",
    "data-service": name,
    "data-state": state,
    transform: `translate(${place.x},${place.y})`,
  });
  box.append(
    el("rect", { width: BOX_W, height, rx: 8 }),
    el("text", { x: 10, y: 18, class: "live-title" }, place.label),
  );
  instances.forEach((instance, index) => {
    const y = 36 + 16 * index;
    const row = el("g", { "data-testid": "live-instance", "data-state": instance.state });
    row.append(
      el("circle", { cx: 14, cy: y - 4, r: 5, class: `dot ${instance.state}` }),
      el("text", { x: 24, y, class: "live-small" }, `${hostOf(instance.url)} ${instance.state}`),
    );
    box.append(row);
  });
  lines.forEach((line, index) => {
    const y = 36 + 16 * Math.max(instances.length, 1) + 14 * index;
    box.append(el("text", { x: 10, y, class: "live-tiny" }, line));
  });
  return { node: box, x: place.x, y: place.y, w: BOX_W, h: height };
}

function infraBox(name, x, y, state) {
  const box = el("g", {
    class: "live-box",
    "data-testid": "live-infra",
    "data-infra": name,
    "data-state": state === "ok" || state === "static" ? "up" : "down",
    transform: `translate(${x},${y})`,
  });
  box.append(
    el("rect", { width: 150, height: 46, rx: 8 }),
    el("text", { x: 10, y: 18, class: "live-title" }, name),
    el("text", { x: 10, y: 36, class: "live-small" }, state),
  );
  return { node: box, x, y, w: 150, h: 46 };
}

function channelPill(name, place, totals) {
  const figures = totals || {};
  const pill = el("g", {
    class: "live-pill",
    "data-testid": "live-channel",
    "data-channel": name,
    transform: `translate(${place.x},${place.y})`,
  });
  pill.append(
    el("rect", { width: PILL_W, height: PILL_H, rx: 23 }),
    el("text", { x: 16, y: 19, class: "live-title" }, name),
    el(
      "text",
      { x: 16, y: 36, class: "live-tiny" },
      `lag ${number(figures.lag, 0)} · dead ${number(figures.dead_letters, 0)}`,
    ),
  );
  return { node: pill, x: place.x, y: place.y, w: PILL_W, h: PILL_H };
}

// -- arrows -----------------------------------------------------------------------------

function edgePoint(box, toward) {
  const cx = box.x + box.w / 2;
  const cy = box.y + box.h / 2;
  const dx = toward.x - cx;
  const dy = toward.y - cy;
  const scale = Math.min(Math.abs(box.w / 2 / (dx || 1e-9)), Math.abs(box.h / 2 / (dy || 1e-9)));
  return { x: cx + dx * scale, y: cy + dy * scale };
}

function arrow(spec, shapes, channels) {
  const from = shapes[spec.from];
  const to = shapes[spec.to];
  const centre = (b) => ({ x: b.x + b.w / 2, y: b.y + b.h / 2 });
  const start = edgePoint(from, centre(to));
  const end = edgePoint(to, centre(from));
  const rate = (channels[spec.channel] || {})[spec.rate] || 0;
  const group = el("g", {
    class: rate > 0 ? "live-arrow lit" : "live-arrow",
    "data-testid": "live-arrow",
    "data-from": spec.from,
    "data-to": spec.to,
  });
  group.append(
    el("line", { x1: start.x, y1: start.y, x2: end.x, y2: end.y, "marker-end": "url(#live-head)" }),
    el(
      "text",
      { x: (start.x + end.x) / 2, y: (start.y + end.y) / 2 - 4, class: "live-rate" },
      `${number(rate)}/s`,
    ),
  );
  return group;
}

function marker() {
  const defs = el("defs");
  const head = el("marker", {
    id: "live-head",
    viewBox: "0 0 10 10",
    refX: 9,
    refY: 5,
    markerUnits: "userSpaceOnUse",
    markerWidth: 9,
    markerHeight: 9,
    orient: "auto-start-reverse",
  });
  head.append(el("path", { d: "M0,0 L10,5 L0,10 z" }));
  defs.append(head);
  return defs;
}

export function draw(snapshot) {
  const services = snapshot.services || {};
  const infrastructure = snapshot.infrastructure || {};
  const shapes = {};
  for (const [name, place] of Object.entries(SERVICES)) {
    const instances = name === "clients" ? [] : (services[name] || {}).instances || [];
    shapes[name] = serviceBox(name, place, instances);
  }
  for (const [name, place] of Object.entries(CHANNELS)) {
    shapes[`ch:${name}`] = channelPill(name, place, (snapshot.channels || {})[name]);
  }
  shapes.redis = infraBox("redis", 940, 190, infrastructure.redis || "unknown");
  shapes.consul = infraBox("discovery", 940, 400, infrastructure.consul || "unknown");
  const brokerState = infrastructure.broker || "unknown";
  const broker = el("g", {
    class: "live-broker",
    "data-testid": "live-infra",
    "data-infra": "broker",
    "data-state": brokerState === "ok" ? "up" : "down",
  });
  broker.append(
    el("rect", { x: 470, y: 5, width: 210, height: 460, rx: 12 }),
    el("text", { x: 482, y: 26, class: "live-title" }, `broker · ${brokerState}`),
  );
  const svg = $("live-diagram");
  const arrows = ARROWS.map((spec) => arrow(spec, shapes, snapshot.channels || {}));
  svg.replaceChildren(marker(), broker, ...arrows, ...Object.values(shapes).map((s) => s.node));
  const at = new Date((snapshot.at || 0) * 1000);
  $("live-updated").textContent = `updated ${at.toLocaleTimeString()}`;
}

// -- traces -----------------------------------------------------------------------------

const traces = []; // the trace ids of recent roundtrips (their frames) and batches, newest first

export function noteTrace(frame) {
  if (!frame || typeof frame.trace_id !== "string" || traces.includes(frame.trace_id)) return;
  traces.unshift(frame.trace_id);
  traces.length = Math.min(traces.length, MAX_TRACES);
  const list = $("live-traces");
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary mono";
  button.dataset.testid = "live-trace";
  button.dataset.traceId = frame.trace_id;
  button.textContent = `${frame.key ?? ""} · ${frame.trace_id.slice(0, 12)}…`;
  button.addEventListener("click", () => showTrace(frame.trace_id));
  item.append(button);
  list.prepend(item);
  while (list.children.length > MAX_TRACES) list.lastElementChild.remove();
  $("live-traces-empty").hidden = true;
}

function spanRow(span, first, total) {
  const row = document.createElement("div");
  row.className = "span-row";
  row.dataset.testid = "live-span";
  row.dataset.service = span.service || "";
  const label = document.createElement("span");
  label.className = "span-label mono";
  label.textContent = `${span.service} · ${span.name} · ${span.instance || ""}`;
  const track = document.createElement("span");
  track.className = "span-track";
  const bar = document.createElement("span");
  bar.className = "span-bar";
  bar.style.left = `${(((span.start - first) / 1e6) / total) * 100}%`;
  bar.style.width = `${Math.max((span.duration_ms / total) * 100, 0.5)}%`;
  track.append(bar);
  const duration = document.createElement("span");
  duration.className = "span-ms";
  duration.textContent = `${number(span.duration_ms, 2)} ms`;
  row.append(label, track, duration);
  return row;
}

async function showTrace(traceId) {
  const box = $("live-waterfall");
  $("live-trace-id").textContent = traceId;
  $("live-trace-error").hidden = true;
  try {
    const trace = await api.trace(traceId);
    const first = Math.min(...trace.spans.map((s) => s.start));
    const last = Math.max(...trace.spans.map((s) => s.start + s.duration_ms * 1e6));
    const total = Math.max((last - first) / 1e6, 0.001);
    box.replaceChildren(...trace.spans.map((span) => spanRow(span, first, total)));
  } catch (error) {
    box.replaceChildren();
    $("live-trace-error").textContent = `${error.title || "Error"} — ${error.detail || ""}`;
    $("live-trace-error").hidden = false;
  }
}

// -- the stream -------------------------------------------------------------------------

export function startLiveView() {
  const query = apiKey() ? `?api_key=${encodeURIComponent(apiKey())}` : "";
  const source = new EventSource(`/api/live/stream${query}`);
  source.addEventListener("snapshot", (event) => {
    $("live-panel").dataset.state = "open";
    draw(JSON.parse(event.data));
  });
  // EventSource reconnects by itself; until then the view says it is stale.
  source.addEventListener("error", () => {
    $("live-panel").dataset.state = "stale";
  });
}
