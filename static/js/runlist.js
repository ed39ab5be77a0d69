/* Run lists: the rows of runs that have not ended follow their state by polling one small JSON
 * endpoint (`?ids=...`) every few seconds, while the tab is visible. One request covers the
 * whole page, from however many repositories; polling stops once every shown run has ended.
 */
(function () {
  "use strict";
  const POLL_MS = 4000;
  const FINAL = new Set(["success", "failure", "cancelled", "skipped", "timed_out"]);
  const table = document.getElementById("runs");
  if (!table) return;
  const url = table.dataset.pollUrl;

  function activeRows() {
    return Array.from(table.querySelectorAll("tr.run-row")).filter(
      (row) => !FINAL.has(row.dataset.state)
    );
  }

  function show(row, run) {
    row.dataset.state = run.state;
    const status = row.querySelector(".run-status .status");
    if (status) {
      status.dataset.state = run.state;
      status.textContent = run.state;
    }
    const duration = row.querySelector(".run-duration");
    if (duration) duration.textContent = run.duration;
  }

  async function poll() {
    const rows = activeRows();
    if (!rows.length) return false;
    if (document.visibilityState === "visible") {
      const ids = rows.map((row) => row.dataset.runId).join(",");
      try {
        const response = await fetch(url + "?ids=" + encodeURIComponent(ids), {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (response.ok) {
          const body = await response.json();
          const byId = new Map(body.runs.map((run) => [String(run.id), run]));
          for (const row of rows) {
            const run = byId.get(row.dataset.runId);
            if (run) show(row, run);
          }
        }
      } catch (error) {
        // The server is restarting or the network is gone: the next poll tries again.
      }
    }
    return true;
  }

  async function loop() {
    if (await poll()) setTimeout(loop, POLL_MS);
  }
  setTimeout(loop, POLL_MS);
})();
