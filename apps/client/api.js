// The HTTP API through the gateway: JSON in and out, errors as Problem (from problem+json).

const API_KEY_STORAGE = "msarch.apiKey";

export function apiKey() {
  return localStorage.getItem(API_KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(API_KEY_STORAGE, value);
  else localStorage.removeItem(API_KEY_STORAGE);
}

export class Problem extends Error {
  constructor(status, title, detail, body = {}) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.body = body;
  }
}

const traceOf = new WeakMap(); // an answer's body -> the trace id of its traceparent

/** The trace id the gateway answered `data` with (its traceparent), if any. */
export function traceIdOf(data) {
  return data && typeof data === "object" ? traceOf.get(data) : undefined;
}

async function request(method, path, body) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new Problem(0, "Network error", `the gateway could not be reached (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const traceparent = response.headers.get("traceparent");
  if (traceparent && data && typeof data === "object") traceOf.set(data, traceparent.split("-")[1]);
  if (!response.ok) {
    const title = (data && data.title) || `HTTP ${response.status}`;
    const detail = (data && data.detail) || (data ? "" : text.slice(0, 200));
    throw new Problem(response.status, title, detail, data || {});
  }
  return data;
}

export const api = {
  roundtrip: (key, value) => request("POST", "/api/roundtrip", { key, value }),
  batch: (size) => request("POST", "/api/batch", { size }),
  batchInfo: (id) => request("GET", `/api/batch/${encodeURIComponent(id)}`),
  batchKeys: (offset, limit) =>
    request("GET", `/api/batch/batchkeys?offset=${offset}&limit=${limit}`),
  batchValues: (id, offset, limit) =>
    request(
      "GET",
      `/api/batch/batchvalues/${encodeURIComponent(id)}?offset=${offset}&limit=${limit}`,
    ),
  deadLetters: (limit = 100) => request("GET", `/api/dead?limit=${limit}`),
  requeueDead: (ids) => request("POST", "/api/dead/requeue", ids ? { ids } : { all: true }),
  dropDead: (ids) => request("POST", "/api/dead/drop", { ids }),
  trace: (traceId) => request("GET", `/api/traces/${encodeURIComponent(traceId)}`),
  events: (after, limit) =>
    request(
      "GET",
      `/api/events?limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ""}`,
    ),
};
