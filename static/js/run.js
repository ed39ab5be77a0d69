/* The run page: job states in the graph and the jobs table follow the WebSocket `run` frames.
 *
 * A change the page cannot show by recolouring (jobs that were not there: a matrix expanded
 * from its needs' outputs) reloads it; so does the run ending, which brings the re-run buttons,
 * the step summaries and the final durations.
 */
(function () {
  "use strict";
  const cicd = window.cicd;
  const configElement = document.getElementById("run-config");
  if (!configElement) return;
  const config = JSON.parse(configElement.textContent);
  const runState = document.getElementById("run-state");
  const renderedFinal = cicd.FINAL_STATES.has(runState.dataset.state);
  let reloading = false;

  function reload() {
    if (reloading) return;
    reloading = true;
    setTimeout(() => window.location.reload(), 300);
  }

  function groupState(states) {
    for (const state of config.groupStateOrder) {
      if (states.has(state)) return state;
    }
    return "pending";
  }

  function showJobs(jobs) {
    const known = new Set(
      Array.from(document.querySelectorAll(".job-row[data-job-id]"), (row) => row.dataset.jobId)
    );
    const given = new Set(jobs.map((job) => String(job.id)));
    const sameJobs = known.size === given.size && [...given].every((id) => known.has(id));
    if (!sameJobs) {
      reload();
      return;
    }
    for (const job of jobs) {
      for (const element of document.querySelectorAll('[data-job-id="' + job.id + '"]')) {
        cicd.setState(element, job.state);
        const status = element.querySelector(".status");
        if (status) {
          cicd.setState(status, job.state);
          status.textContent = job.state;
        }
        const title = element.querySelector("title");
        if (title) title.textContent = (job.name || "") + ": " + job.state;
        const duration = element.querySelector(".job-duration");
        if (duration) {
          duration.dataset.started = job.started_at || "";
          duration.dataset.finished = job.finished_at || "";
          duration.textContent = cicd.durationBetween(job.started_at, job.finished_at);
        }
      }
    }
    for (const node of document.querySelectorAll(".graph-node")) {
      const states = new Set(
        Array.from(node.querySelectorAll(".graph-job"), (job) => job.dataset.state)
      );
      cicd.setState(node, groupState(states));
    }
  }

  function onFrame(frame) {
    if (frame.type === "error") {
      document.body.dataset.liveError = frame.message || "error";
      return;
    }
    if (frame.type !== "run" || !frame.run || frame.run.id !== config.run) return;
    if (frame.run.attempt !== undefined && frame.run.attempt > config.attempt) {
      // Someone started another attempt: this page keeps showing the one it was opened on.
      document.getElementById("new-attempt").hidden = false;
      return;
    }
    cicd.setState(runState, frame.run.state);
    runState.textContent = frame.run.state;
    const duration = document.getElementById("run-duration");
    if (duration && frame.run.started_at) {
      duration.dataset.started = frame.run.started_at;
      duration.dataset.finished = frame.run.finished_at || "";
      duration.textContent = cicd.durationBetween(frame.run.started_at, frame.run.finished_at);
    }
    if (Array.isArray(frame.jobs)) showJobs(frame.jobs);
    if (!renderedFinal && cicd.FINAL_STATES.has(frame.run.state)) reload();
  }

  // Older attempts have ended for good: nothing of theirs changes any more.
  if (!config.isLatest) return;
  const socket = new cicd.LiveSocket(config.socket, {
    onFrame,
    onStatus: (status) => (document.body.dataset.live = status),
  }).start();
  socket.subscribe("run", () => ({ subscribe: "run", run: config.run }));
  setInterval(() => cicd.tickDurations(document), 1000);
})();
