// The websocket to /ws, reconnected with exponential backoff; resumes after the events it has.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
// A connection that is closed sooner than this (e.g. accepted, then 1013) still counts as a failure.
const STABLE_MS = 5000;
// Event ids already passed on; a frame with one of them again is dropped.
const SEEN_EVENTS = 4096;
// Live frames may arrive a little out of log order: resume after the oldest of the last few,
// so that none in between is skipped (the ones sent again are dropped as seen).
const RESUME_WINDOW = 64;

function position(eventId) {
  const [ms, seq] = eventId.split("-").map(Number);
  return [ms, seq || 0];
}

function before(a, b) {
  const [pa, pb] = [position(a), position(b)];
  return pa[0] < pb[0] || (pa[0] === pb[0] && pa[1] < pb[1]);
}

export class LiveSocket {
  // onFrame(frame) for every JSON frame, once per event id (a gap frame only when it took
  // events this socket did not get); onState(state, detail) for
  // "connecting", "open", "waiting" (detail: ms until the next try).
  constructor({ onFrame, onState, query = () => ({}) }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.query = query;
    this.seen = new Set(); // insertion order: the oldest is dropped first
    this.recent = []; // the last RESUME_WINDOW event ids received
    this.received = 0;
    this.duplicates = 0;
    this.failures = 0;
    this.socket = null;
  }

  // The newest event id received, or null.
  get newestEventId() {
    if (this.recent.length === 0) return null;
    return this.recent.reduce((newest, id) => (before(newest, id) ? id : newest));
  }

  get lastEventId() {
    if (this.recent.length === 0) return null;
    return this.recent.reduce((oldest, id) => (before(id, oldest) ? id : oldest));
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const params = new URLSearchParams(this.query());
    const after = this.lastEventId;
    if (after !== null) params.set("after", after);
    const search = params.toString();
    return `${scheme}://${location.host}/ws${search ? `?${search}` : ""}`;
  }

  connect() {
    this.onState("connecting");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    let openedAt = null;
    socket.addEventListener("open", () => {
      openedAt = Date.now();
      this.onState("open");
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (openedAt !== null && Date.now() - openedAt >= STABLE_MS) this.failures = 0;
      this.retry();
    });
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not ours to show: every frame of /ws is JSON
    }
    const eventId = frame?.event_id === undefined || frame?.event_id === null
      ? null
      : String(frame.event_id);
    if (eventId !== null) {
      if (this.seen.has(eventId)) {
        this.duplicates += 1;
        return;
      }
      this.seen.add(eventId);
      if (this.seen.size > SEEN_EVENTS) this.seen.delete(this.seen.values().next().value);
      this.recent.push(eventId);
      if (this.recent.length > RESUME_WINDOW) this.recent.shift();
    }
    if (frame?.type === "gap" && !this.missed(frame.removed_up_to)) return;
    this.received += 1;
    this.onFrame(frame);
  }

  // A gap frame: events after our resume point were trimmed, up to `removedUpTo`. We resume
  // from the oldest of our last few ids, so the trim may have taken only ones we have: we
  // missed some only if it reaches past the newest we got.
  missed(removedUpTo) {
    const newest = this.newestEventId;
    return newest === null || typeof removedUpTo !== "string" || before(newest, removedUpTo);
  }

  retry() {
    const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.failures);
    // Jitter, so that many clients do not all come back at the same instant.
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    this.failures += 1;
    this.onState("waiting", jittered);
    setTimeout(() => this.connect(), jittered);
  }
}
