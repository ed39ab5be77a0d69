/* The environment page: follows the deployment in progress (its steps, the traffic split per
 * version), what runs now and the lock, by polling the page's `status.json`: every second while
 * a deployment is queued or in progress, every few seconds otherwise, and only while the tab is
 * visible (a hidden tab polls again as soon as it is shown).
 */
(function () {
  "use strict";
  const configElement = document.getElementById("environment-config");
  const live = document.getElementById("live");
  if (!configElement || !live) return;
  const config = JSON.parse(configElement.textContent);
  const ACTIVE = new Set(["queued", "in_progress"]);
  const historyRows = document.getElementById("deployments");
  const onFirstPage = !new URLSearchParams(window.location.search).has("after");
  const initialWaiting = Number(document.getElementById("waiting").dataset.count);
  let delay = ACTIVE.has(live.dataset.state) ? config.activeMs : config.idleMs;
  let timer = null;
  let inFlight = false;

  function label(state) {
    return state.replace(/_/g, " ");
  }

  // As the server writes times ("Y-m-d H:i:s", in UTC, the server's time zone).
  function timeText(iso) {
    return new Date(iso).toISOString().slice(0, 19).replace("T", " ");
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  function showTraffic(segments) {
    const bar = document.getElementById("traffic-bar");
    const legend = document.getElementById("traffic-legend");
    // Segments are kept by version, so a width change is a transition, not a new element.
    const existing = new Map(Array.from(bar.children).map((node) => [node.dataset.version, node]));
    bar.replaceChildren(
      ...segments.map((segment) => {
        const node = existing.get(segment.version) || element("div");
        node.className = "traffic-segment traffic-colour-" + segment.colour;
        node.dataset.version = segment.version;
        node.dataset.new = String(segment.new);
        node.dataset.percent = String(segment.percent);
        node.style.width = segment.percent + "%";
        node.title = segment.version + ": " + segment.percent + "%";
        node.textContent = segment.percent + "%";
        return node;
      })
    );
    if (!segments.length) {
      const empty = element("li", "empty", "No traffic split reported yet.");
      empty.id = "no-traffic";
      legend.replaceChildren(empty);
      return;
    }
    legend.replaceChildren(
      ...segments.map((segment) => {
        const item = element("li", "traffic-version");
        item.dataset.version = segment.version;
        item.append(
          element("span", "traffic-swatch traffic-colour-" + segment.colour),
          element("code", "", segment.version),
          " ",
          element("span", "traffic-percent", segment.percent + "%")
        );
        if (segment.new) item.append(" ", element("span", "tag", "new"));
        return item;
      })
    );
  }

  function stepItem(step) {
    const item = element("li", "deploy-step");
    item.dataset.index = String(step.index);
    item.dataset.state = step.state;
    const dot = element("span", "status-dot");
    dot.dataset.state = step.state;
    item.append(
      dot,
      element("span", "deploy-step-name", step.name),
      " ",
      element("span", "deploy-step-outcome muted", step.outcome || "running"),
      " ",
      element("span", "deploy-step-duration muted", step.duration)
    );
    if (step.detail) item.append(" ", element("span", "deploy-step-detail muted small", step.detail));
    return item;
  }

  function showDeployment(deployment) {
    live.hidden = false;
    live.dataset.deploymentId = String(deployment.id);
    live.dataset.state = deployment.state;
    setText("live-title", ACTIVE.has(deployment.state) ? "Deployment in progress" : "Latest deployment");
    setText("live-id", "#" + deployment.id);
    const state = document.getElementById("live-state");
    state.dataset.state = deployment.state;
    state.textContent = label(deployment.state);
    setText("live-version", deployment.version);
    setText("live-strategy", deployment.strategy);
    setText("live-duration", deployment.duration);
    showTraffic(deployment.traffic);
    document.getElementById("live-steps").replaceChildren(...deployment.steps.map(stepItem));
    const reason = document.getElementById("live-reason");
    reason.textContent = deployment.reason;
    reason.hidden = !deployment.reason;
  }

  function showInHistory(deployment) {
    const row = historyRows.querySelector('tr[data-deployment-id="' + deployment.id + '"]');
    if (!row) {
      if (onFirstPage) document.getElementById("new-deployment").hidden = false;
      return;
    }
    row.dataset.state = deployment.state;
    const status = row.querySelector(".deployment-outcome .status");
    status.dataset.state = deployment.state;
    status.textContent = label(deployment.state);
    row.querySelector(".deployment-duration").textContent = deployment.duration;
    showHistorySteps(row.querySelector(".deployment-steps-cell"), deployment.steps);
    let reason = row.querySelector(".deployment-reason");
    if (deployment.reason && !reason) {
      reason = element("div", "deployment-reason");
      row.querySelector(".deployment-outcome").append(reason);
    }
    if (reason) reason.textContent = deployment.reason;
  }

  function showHistorySteps(cell, steps) {
    if (!steps.length) return;
    let details = cell.querySelector("details");
    if (!details) {
      details = element("details", "deployment-steps");
      details.append(element("summary"), element("ol", "deploy-steps"));
      cell.replaceChildren(details);
    }
    details.querySelector("summary").textContent =
      steps.length + (steps.length === 1 ? " step" : " steps");
    details.querySelector("ol").replaceChildren(...steps.map(stepItem));
  }

  function fact(facts, term, id, ...content) {
    const value = element("dd");
    value.id = id;
    value.append(...content);
    facts.append(element("dt", "", term), value);
  }

  function showCurrent(current) {
    const facts = document.getElementById("now-facts");
    if (!current || (facts && facts.dataset.deploymentId === String(current.id))) return;
    const shown = element("dl", "facts");
    shown.id = "now-facts";
    shown.dataset.deploymentId = String(current.id);
    const digest = element("code", "digest", current.short_digest);
    digest.id = "now-digest";
    digest.title = current.image_digest;
    const image = element("code", "", current.image);
    image.id = "now-image";
    fact(shown, "Version", "now-version", image, " ", digest);
    const sha = element("code", "sha", current.sha.slice(0, 7));
    sha.title = current.sha;
    let commit = sha;
    if (current.run_url) {
      commit = element("a");
      commit.href = current.run_url;
      commit.append(sha);
    }
    fact(shown, "Commit", "now-commit", commit, " ", element("code", "", current.ref_name));
    fact(shown, "Triggered by", "now-who", current.triggered_by || "—");
    fact(shown, "Approvals", "now-approvals", current.approvals.join("; ") || "none needed");
    fact(shown, "Strategy", "now-strategy", current.strategy + (current.rollback_of ? " (rollback)" : ""));
    const deployedAt = current.finished_at || current.created_at;
    const when = element("time", "", timeText(deployedAt));
    when.dateTime = deployedAt;
    fact(shown, "Deployed", "now-when", when, " ", element("span", "muted", "(deployment #" + current.id + ")"));
    const replaced = facts || document.getElementById("nothing-deployed");
    replaced.replaceWith(shown);
  }

  function showLock(lock) {
    const holder = document.getElementById("lock");
    if (!lock) {
      holder.replaceChildren(element("span", "muted", "free"));
      return;
    }
    const who = element("span", "", "#" + lock.deployment);
    who.id = "lock-holder";
    const until = lock.expired
      ? "(its lease expired; the next deployment takes it over)"
      : "until " + timeText(lock.expires_at).slice(11);
    holder.replaceChildren("held by deployment ", who, " ", element("span", "muted", until));
  }

  function show(status) {
    if (status.deployment) {
      showDeployment(status.deployment);
      showInHistory(status.deployment);
    }
    showCurrent(status.current);
    showLock(status.lock);
    if (status.waiting !== initialWaiting) document.getElementById("waiting-changed").hidden = false;
  }

  async function poll() {
    timer = null;
    if (inFlight || document.visibilityState !== "visible") return;
    inFlight = true;
    try {
      const response = await fetch(config.url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const status = await response.json();
        show(status);
        delay = status.poll_ms || delay;
      }
    } catch (error) {
      // The server is restarting or the network is gone: the next poll tries again.
    } finally {
      inFlight = false;
    }
    schedule(delay);
  }

  function schedule(ms) {
    if (timer === null && document.visibilityState === "visible") timer = setTimeout(poll, ms);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") return;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    poll();
  });
  schedule(delay);
})();
