// The websocket to /ws, reconnected with exponential backoff; resumes after the last event id.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
// A connection that is closed sooner than this (e.g. accepted, then 1013) still counts as a failure.
const STABLE_MS = 5000;

export class LiveSocket {
  // onFrame(frame) for every JSON frame; onState(state, detail) for "connecting",
  // "open", "waiting" (detail: ms until the next try).
  constructor({ onFrame, onState, query = () => ({}) }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.query = query;
    this.lastEventId = null;
    this.failures = 0;
    this.socket = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const params = new URLSearchParams(this.query());
    // A later version of /ws tags frames with event_id; resume after the last one seen.
    if (this.lastEventId !== null) params.set("after", this.lastEventId);
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
    if (frame && frame.event_id !== undefined && frame.event_id !== null) {
      this.lastEventId = String(frame.event_id);
    }
    this.onFrame(frame);
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
