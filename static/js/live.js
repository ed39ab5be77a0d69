/* The live-updates WebSocket (/ws/live/) shared by the run and job pages.
 *
 * Subscriptions are remembered as functions that build the subscribe message, so that after a
 * reconnect each one is sent again with what the page holds *then* (a job log resumes from the
 * number of lines it already has: no gap, no duplicate). Reconnects back off exponentially with
 * jitter, so a restarted server is not hit by every open tab at the same instant.
 */
(function (global) {
  "use strict";

  const FIRST_DELAY_MS = 500;
  const MAX_DELAY_MS = 15000;

  class LiveSocket {
    constructor(path, { onFrame, onStatus } = {}) {
      const scheme = global.location.protocol === "https:" ? "wss:" : "ws:";
      this.url = scheme + "//" + global.location.host + path;
      this.onFrame = onFrame || function () {};
      this.onStatus = onStatus || function () {};
      this.subscriptions = new Map();
      this.failures = 0;
      this.socket = null;
      this.closed = false;
      this.timer = null;
    }

    start() {
      this.connect();
      global.addEventListener("beforeunload", () => this.stop());
      return this;
    }

    stop() {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      if (this.socket) this.socket.close();
    }

    /* `build` returns the subscribe message; it is called on every (re)connect. */
    subscribe(key, build) {
      this.subscriptions.set(key, build);
      this.send(build());
    }

    /* Drop the subscription on the server and take it again from what `build` says now (a
     * resync, or a gap noticed by the page). */
    resubscribe(key, unsubscribeMessage) {
      const build = this.subscriptions.get(key);
      if (!build) return;
      this.send(unsubscribeMessage);
      this.send(build());
    }

    send(message) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(message));
        return true;
      }
      return false; // sent on the next open, through the subscriptions
    }

    connect() {
      if (this.closed) return;
      this.onStatus(this.failures ? "reconnecting" : "connecting");
      let socket;
      try {
        socket = new WebSocket(this.url);
      } catch (error) {
        this.retry();
        return;
      }
      this.socket = socket;
      socket.onopen = () => {
        this.failures = 0;
        this.onStatus("live");
        for (const build of this.subscriptions.values()) this.send(build());
      };
      socket.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        this.onFrame(frame);
      };
      socket.onclose = () => {
        if (this.socket === socket) this.socket = null;
        this.retry();
      };
      socket.onerror = () => socket.close();
    }

    retry() {
      if (this.closed || this.timer) return;
      this.failures += 1;
      this.onStatus("reconnecting");
      const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (this.failures - 1));
      const delay = base * (0.75 + Math.random() * 0.5);
      this.timer = setTimeout(() => {
        this.timer = null;
        this.connect();
      }, delay);
    }
  }

  /* "1m 23s", as the server writes durations. */
  function formatDuration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s";
    return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m";
  }

  function durationBetween(started, finished) {
    if (!started) return "";
    const start = Date.parse(started);
    const end = finished ? Date.parse(finished) : Date.now();
    if (Number.isNaN(start) || Number.isNaN(end)) return "";
    return formatDuration((end - start) / 1000);
  }

  /* Elements with data-started and no data-finished count up every second. */
  function tickDurations(root) {
    for (const element of root.querySelectorAll("[data-started]")) {
      const started = element.dataset.started;
      if (started && !element.dataset.finished) {
        element.textContent = durationBetween(started, null);
      }
    }
  }

  function setState(element, state) {
    if (!element || !state) return;
    element.dataset.state = state;
    for (const name of Array.from(element.classList)) {
      if (name.startsWith("state-")) element.classList.remove(name);
    }
    if (element.classList.contains("graph-node") || element.classList.contains("graph-job")) {
      element.classList.add("state-" + state);
    }
  }

  global.cicd = Object.assign(global.cicd || {}, {
    LiveSocket,
    formatDuration,
    durationBetween,
    tickDurations,
    setState,
    FINAL_STATES: new Set(["success", "failure", "cancelled", "skipped", "timed_out"]),
  });
})(window);
