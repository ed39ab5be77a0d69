/* The job page: the live log, its steps and its state.
 *
 * The log can have a million lines, so the lines live in plain arrays (LogBuffer) and only the
 * rows in view are in the DOM: every row has the same height, a spacer gives the scroller its
 * full height, and the slice in view is rendered again on scroll. Lines come from the WebSocket
 * `job` subscription; after a reconnect it subscribes again from the number of lines it holds,
 * and a batch that overlaps what it has is trimmed, so no line is lost or shown twice.
 *
 * Text is HTML-escaped before anything else; ANSI colours (SGR 30-37, 90-97, 40-47, 100-107,
 * bold) become classes; other escape sequences are dropped.
 */
(function (global) {
  "use strict";

  // ---------------------------------------------------------------------------------- ANSI

  // CSI sequences (colours are `m`), two-character escapes, and OSC strings (window titles).
  const ESCAPES = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]/g;
  const SGR = /\x1b\[([0-9;]*)m/;
  const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (character) => HTML_ESCAPES[character]);
  }

  function plainText(text) {
    return text.indexOf("\x1b") === -1 ? text : text.replace(ESCAPES, "");
  }

  /* `text` with its matches of `query` (lower case) in <mark>; everything escaped. */
  function highlighted(text, query) {
    if (!query) return escapeHtml(text);
    const lower = text.toLowerCase();
    let out = "";
    let from = 0;
    for (;;) {
      const at = lower.indexOf(query, from);
      if (at === -1) break;
      out += escapeHtml(text.slice(from, at)) + "<mark>" + escapeHtml(text.slice(at, at + query.length)) + "</mark>";
      from = at + query.length;
    }
    return out + escapeHtml(text.slice(from));
  }

  function applySgr(style, parameters) {
    const codes = parameters === "" ? [0] : parameters.split(";").map((code) => Number(code) || 0);
    for (let i = 0; i < codes.length; i++) {
      const code = codes[i];
      if (code === 0) {
        style.fg = null;
        style.bg = null;
        style.bold = false;
      } else if (code === 1) style.bold = true;
      else if (code === 22) style.bold = false;
      else if (code >= 30 && code <= 37) style.fg = code - 30;
      else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
      else if (code === 39) style.fg = null;
      else if (code >= 40 && code <= 47) style.bg = code - 40;
      else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
      else if (code === 49) style.bg = null;
      else if (code === 38 || code === 48) {
        // 256-colour and RGB forms: the 16 basic colours are kept, the rest is skipped.
        if (codes[i + 1] === 5) {
          const index = codes[i + 2];
          if (index !== undefined && index < 16) {
            if (code === 38) style.fg = index;
            else style.bg = index;
          }
          i += 2;
        } else if (codes[i + 1] === 2) {
          i += 4;
        }
      }
    }
  }

  /* One line as HTML: escaped text in spans carrying the colour classes. Each line starts with
   * no colour, so any line can be drawn on its own (which virtual scrolling needs). */
  function ansiToHtml(text, query) {
    const style = { fg: null, bg: null, bold: false };
    let out = "";
    let last = 0;
    ESCAPES.lastIndex = 0;
    let match;
    const segment = (piece) => {
      if (!piece) return;
      const html = highlighted(piece, query);
      const classes = [];
      if (style.fg !== null) classes.push("fg-" + style.fg);
      if (style.bg !== null) classes.push("bg-" + style.bg);
      if (style.bold) classes.push("bold");
      out += classes.length ? '<span class="' + classes.join(" ") + '">' + html + "</span>" : html;
    };
    while ((match = ESCAPES.exec(text)) !== null) {
      segment(text.slice(last, match.index));
      const sgr = SGR.exec(match[0]);
      if (sgr && sgr[0].length === match[0].length) applySgr(style, sgr[1]);
      last = ESCAPES.lastIndex;
    }
    segment(text.slice(last));
    return out;
  }

  // ---------------------------------------------------------------------------- the buffer

  const NO_GROUP = -1;

  /* Every line of the log, in arrays indexed by line (0-based; the page shows index + 1). */
  class LogBuffer {
    constructor() {
      this.texts = [];
      this.streams = [];
      this.steps = [];
      this.times = [];
      this.groups = []; // the index of the `group` line a line is inside of, or NO_GROUP
      this.properties = new Map();
      this.stepStarts = new Map(); // step index -> its first line
      this.annotations = []; // indexes of error, warning and notice lines
      this.openGroup = NO_GROUP;
    }

    get length() {
      return this.texts.length;
    }

    /* A batch from the server: `offset` is the index of its first line. Returns how many lines
     * were new; -1 when the batch starts after the end (a gap: subscribe again from here). */
    add(offset, lines) {
      if (offset > this.length) return -1;
      const skip = this.length - offset;
      for (let i = skip; i < lines.length; i++) this.push(lines[i]);
      return Math.max(0, lines.length - skip);
    }

    push(line) {
      const index = this.length;
      const stream = String(line[1] || "stdout");
      const step = line[3] === undefined || line[3] === null ? null : Number(line[3]);
      if (this.openGroup !== NO_GROUP && index > 0 && this.steps[index - 1] !== step) {
        this.openGroup = NO_GROUP; // a group never reaches into the next step
      }
      this.times.push(line[0]);
      this.streams.push(stream);
      this.texts.push(String(line[2] === undefined || line[2] === null ? "" : line[2]));
      this.steps.push(step);
      if (line[4] && typeof line[4] === "object") this.properties.set(index, line[4]);
      if (stream === "group") {
        this.groups.push(NO_GROUP);
        this.openGroup = index;
      } else if (stream === "endgroup") {
        this.groups.push(this.openGroup);
        this.openGroup = NO_GROUP;
      } else {
        this.groups.push(this.openGroup);
      }
      if (step !== null && !this.stepStarts.has(step)) this.stepStarts.set(step, index);
      if (stream === "error" || stream === "warning" || stream === "notice") {
        this.annotations.push(index);
      }
    }

    plain(index) {
      return plainText(this.texts[index]);
    }

    /* What the line says in the log view and in search: an annotation with its place. */
    shownText(index) {
      const properties = this.properties.get(index);
      if (!properties) return this.texts[index];
      let where = properties.file ? String(properties.file) : "";
      if (where && properties.line) where += ":" + properties.line;
      if (where && properties.column) where += ":" + properties.column;
      const title = properties.title ? String(properties.title) + ": " : "";
      return (where ? where + ": " : "") + title + this.texts[index];
    }

    matches(index, query) {
      if (this.streams[index] === "endgroup") return false;
      return plainText(this.shownText(index)).toLowerCase().indexOf(query) !== -1;
    }
  }

  /* Which lines are rows (not hidden in a folded group), as a sorted list of line indexes. */
  class RowMap {
    constructor(buffer) {
      this.buffer = buffer;
      this.folded = new Set();
      this.rows = [];
    }

    visible(index) {
      const buffer = this.buffer;
      if (buffer.streams[index] === "endgroup") return false;
      const group = buffer.groups[index];
      return group === NO_GROUP || !this.folded.has(group);
    }

    appendFrom(start) {
      for (let i = start; i < this.buffer.length; i++) if (this.visible(i)) this.rows.push(i);
    }

    rebuild() {
      this.rows = [];
      this.appendFrom(0);
    }

    /* The row showing line `index`, or the row before it when the line is hidden. */
    rowOf(index) {
      let low = 0;
      let high = this.rows.length - 1;
      while (low < high) {
        const middle = (low + high + 1) >> 1;
        if (this.rows[middle] <= index) low = middle;
        else high = middle - 1;
      }
      return low;
    }

    toggle(groupLine) {
      if (this.folded.has(groupLine)) this.folded.delete(groupLine);
      else this.folded.add(groupLine);
      this.rebuild();
    }

    reveal(index) {
      const group = this.buffer.groups[index];
      if (group !== NO_GROUP && this.folded.has(group)) {
        this.folded.delete(group);
        this.rebuild();
      }
    }
  }

  const exported = { escapeHtml, plainText, ansiToHtml, LogBuffer, RowMap, NO_GROUP };
  if (typeof module !== "undefined" && module.exports) module.exports = exported;
  if (typeof document === "undefined") return;

  // ------------------------------------------------------------------------------ the page

  const ROW_HEIGHT = 20; // .log-line's height in cicd.css
  const OVERSCAN = 40;
  // Browsers cap an element's height (Firefox near 17.9 million pixels): beyond this the
  // scrollbar maps onto the rows proportionally instead of one pixel per pixel.
  const MAX_SCROLL_PX = 8000000;
  const MAX_ANNOTATIONS_LISTED = 200;

  const cicd = global.cicd;
  const config = JSON.parse(document.getElementById("job-config").textContent);
  const scroller = document.getElementById("log");
  const spacer = document.getElementById("log-spacer");
  const rowsElement = document.getElementById("log-rows");
  const searchInput = document.getElementById("log-search");
  const searchCount = document.getElementById("log-search-count");
  const follow = document.getElementById("log-follow");
  const lineCount = document.getElementById("log-line-count");
  const statusElement = document.getElementById("log-status");
  const annotationList = document.getElementById("annotations");

  const buffer = new LogBuffer();
  const rowMap = new RowMap(buffer);
  let query = "";
  let matches = [];
  let currentMatch = -1;
  let selectedLine = -1; // from #L123
  let pendingLine = -1; // a #L link to a line that has not arrived yet
  let pendingStep = null;
  let drawScheduled = false;
  let annotationsListed = 0;

  function scale() {
    const full = rowMap.rows.length * ROW_HEIGHT;
    const height = Math.min(full, MAX_SCROLL_PX);
    const view = scroller.clientHeight;
    if (full <= height || height <= view) return 1;
    return (full - view) / (height - view);
  }

  function scheduleDraw() {
    if (drawScheduled) return;
    drawScheduled = true;
    requestAnimationFrame(draw);
  }

  function draw() {
    drawScheduled = false;
    const rows = rowMap.rows;
    const full = rows.length * ROW_HEIGHT;
    spacer.style.height = Math.min(full, MAX_SCROLL_PX) + "px";
    const top = scroller.scrollTop;
    const position = top * scale();
    const first = Math.floor(position / ROW_HEIGHT);
    const start = Math.max(0, first - OVERSCAN);
    const end = Math.min(rows.length, first + Math.ceil(scroller.clientHeight / ROW_HEIGHT) + OVERSCAN);
    const offset = top - (position - first * ROW_HEIGHT) - (first - start) * ROW_HEIGHT;
    rowsElement.style.transform = "translateY(" + Math.max(0, offset) + "px)";
    const parts = [];
    for (let row = start; row < end; row++) parts.push(lineHtml(rows[row]));
    rowsElement.innerHTML = parts.join("");
    lineCount.textContent = buffer.length.toLocaleString() + (buffer.length === 1 ? " line" : " lines");
  }

  function lineHtml(index) {
    const stream = buffer.streams[index];
    const number = index + 1;
    const classes = ["log-line", "log-" + stream];
    if (index === selectedLine) classes.push("log-line-selected");
    if (currentMatch !== -1 && matches[currentMatch] === index) classes.push("log-current-match");
    const step = buffer.steps[index];
    if (step !== null && buffer.stepStarts.get(step) === index) classes.push("log-step-start");
    if (buffer.groups[index] !== NO_GROUP) classes.push("log-in-group");
    let prefix = "";
    if (stream === "group") {
      const folded = rowMap.folded.has(index);
      classes.push(folded ? "log-group-folded" : "log-group-open");
      prefix = '<span class="log-fold" data-group="' + index + '">' + (folded ? "▸" : "▾") + "</span>";
    } else if (stream === "error" || stream === "warning" || stream === "notice") {
      prefix = '<span class="log-annotation-label">' + stream + "</span>";
    }
    return (
      '<div class="' + classes.join(" ") + '" data-line="' + number + '" data-stream="' + stream + '"' +
      (step !== null ? ' data-step-index="' + step + '"' : "") + ">" +
      '<a class="log-ln" href="#L' + number + '">' + number + "</a>" +
      '<span class="log-text">' + prefix + ansiToHtml(buffer.shownText(index), query) + "</span></div>"
    );
  }

  function atBottom() {
    return scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - ROW_HEIGHT * 2;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  /* Bring line `index` into view, a third of the way down, unfolding its group. */
  function showLine(index) {
    rowMap.reveal(index);
    const row = rowMap.rowOf(index);
    const position = row * ROW_HEIGHT - scroller.clientHeight / 3;
    follow.checked = false;
    spacer.style.height = Math.min(rowMap.rows.length * ROW_HEIGHT, MAX_SCROLL_PX) + "px";
    scroller.scrollTop = Math.max(0, position / scale());
    scheduleDraw();
  }

  // ---- arriving lines

  function received(offset, lines) {
    const before = buffer.length;
    const added = buffer.add(offset, lines);
    if (added === -1) {
      socket.resubscribe("job", { unsubscribe: "job", job: config.job });
      return;
    }
    if (!added) return;
    rowMap.appendFrom(before);
    if (query) {
      for (let i = before; i < buffer.length; i++) if (buffer.matches(i, query)) matches.push(i);
      showCount();
    }
    listAnnotations();
    if (pendingLine !== -1 && pendingLine < buffer.length) {
      selectedLine = pendingLine;
      pendingLine = -1;
      showLine(selectedLine);
    } else if (pendingStep !== null && buffer.stepStarts.has(pendingStep)) {
      const line = buffer.stepStarts.get(pendingStep);
      pendingStep = null;
      showLine(line);
    } else if (follow.checked) {
      spacer.style.height = Math.min(rowMap.rows.length * ROW_HEIGHT, MAX_SCROLL_PX) + "px";
      scrollToBottom();
    }
    scheduleDraw();
  }

  function listAnnotations() {
    const annotations = buffer.annotations;
    if (annotationsListed >= Math.min(annotations.length, MAX_ANNOTATIONS_LISTED)) return;
    const items = [];
    for (; annotationsListed < Math.min(annotations.length, MAX_ANNOTATIONS_LISTED); annotationsListed++) {
      const index = annotations[annotationsListed];
      const kind = buffer.streams[index];
      items.push(
        '<li class="annotation annotation-' + kind + '" data-line="' + (index + 1) + '">' +
        '<span class="log-annotation-label">' + kind + "</span> " +
        '<a href="#L' + (index + 1) + '">' + escapeHtml(plainText(buffer.shownText(index)).slice(0, 300)) +
        "</a></li>"
      );
    }
    annotationList.insertAdjacentHTML("beforeend", items.join(""));
    annotationList.hidden = false;
  }

  // ---- steps and job state

  function showJob(job, steps) {
    const state = document.getElementById("job-state");
    if (job && job.state) {
      cicd.setState(state, job.state);
      state.textContent = job.state;
      const duration = document.getElementById("job-duration");
      if (job.started_at) {
        duration.dataset.started = job.started_at;
        duration.dataset.finished = job.finished_at || "";
        duration.textContent = cicd.durationBetween(job.started_at, job.finished_at);
      }
      const sibling = document.querySelector('.sibling-job[data-job-id="' + job.id + '"]');
      if (sibling) {
        cicd.setState(sibling, job.state);
        cicd.setState(sibling.querySelector(".status-dot"), job.state);
      }
    }
    if (!Array.isArray(steps)) return;
    const list = document.getElementById("steps");
    for (const step of steps) {
      let item = list.querySelector('.step[data-step-index="' + step.index + '"]');
      if (!item) {
        const empty = document.getElementById("no-steps");
        if (empty) empty.remove();
        item = document.createElement("li");
        item.className = "step";
        item.dataset.stepIndex = step.index;
        item.innerHTML =
          '<span class="status-dot"></span> <a class="step-jump" href="#step-' + step.index +
          '" data-step-index="' + step.index + '"></a> <span class="step-state muted"></span> ' +
          '<span class="step-duration muted"></span>';
        list.appendChild(item);
      }
      cicd.setState(item, step.state);
      cicd.setState(item.querySelector(".status-dot"), step.state);
      item.querySelector(".step-jump").textContent = step.name;
      item.querySelector(".step-state").textContent = step.state;
      const duration = item.querySelector(".step-duration");
      duration.dataset.started = step.started_at || "";
      duration.dataset.finished = step.finished_at || "";
      duration.textContent = cicd.durationBetween(step.started_at, step.finished_at);
    }
  }

  function showSiblings(jobs) {
    if (!Array.isArray(jobs)) return;
    for (const job of jobs) {
      const sibling = document.querySelector('.sibling-job[data-job-id="' + job.id + '"]');
      if (!sibling) continue;
      cicd.setState(sibling, job.state);
      cicd.setState(sibling.querySelector(".status-dot"), job.state);
    }
  }

  function jumpToStep(step) {
    if (buffer.stepStarts.has(step)) showLine(buffer.stepStarts.get(step));
    else pendingStep = step; // its lines have not arrived yet
  }

  // ---- search

  function search(text) {
    query = text.toLowerCase();
    matches = [];
    currentMatch = -1;
    if (query) {
      for (let i = 0; i < buffer.length; i++) if (buffer.matches(i, query)) matches.push(i);
    }
    showCount();
    if (matches.length) step(1);
    else scheduleDraw();
  }

  function step(direction) {
    if (!matches.length) return;
    if (currentMatch === -1) {
      // From the line in view onwards, as a browser's find does.
      const position = scroller.scrollTop * scale();
      const line = rowMap.rows[Math.min(rowMap.rows.length - 1, Math.floor(position / ROW_HEIGHT))] || 0;
      currentMatch = direction > 0 ? matches.findIndex((index) => index >= line) : -1;
      if (currentMatch === -1) currentMatch = direction > 0 ? 0 : matches.length - 1;
    } else {
      currentMatch = (currentMatch + direction + matches.length) % matches.length;
    }
    showCount();
    showLine(matches[currentMatch]);
  }

  function showCount() {
    if (!query) searchCount.textContent = "";
    else if (!matches.length) searchCount.textContent = "no matches";
    else searchCount.textContent = (currentMatch + 1 || "–") + " / " + matches.length;
  }

  let searchTimer = null;
  searchInput.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search(searchInput.value), 250);
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    clearTimeout(searchTimer);
    if (searchInput.value.toLowerCase() !== query) search(searchInput.value);
    else step(event.shiftKey ? -1 : 1);
  });
  document.getElementById("log-search-next").addEventListener("click", () => step(1));
  document.getElementById("log-search-prev").addEventListener("click", () => step(-1));

  // ---- line links, folding, steps, scrolling

  function followHash() {
    const line = /^#L(\d+)$/.exec(global.location.hash);
    if (line) {
      const index = Number(line[1]) - 1;
      if (index < buffer.length) {
        selectedLine = index;
        showLine(index);
      } else {
        pendingLine = index;
        follow.checked = false;
      }
      return;
    }
    const stepLink = /^#step-(\d+)$/.exec(global.location.hash);
    if (stepLink) jumpToStep(Number(stepLink[1]));
  }
  global.addEventListener("hashchange", followHash);

  rowsElement.addEventListener("click", (event) => {
    const fold = event.target.closest(".log-fold, .log-group-open .log-text, .log-group-folded .log-text");
    if (!fold) return;
    const line = fold.closest(".log-line");
    rowMap.toggle(Number(line.dataset.line) - 1);
    scheduleDraw();
  });

  document.getElementById("steps").addEventListener("click", (event) => {
    const link = event.target.closest(".step-jump");
    if (link) jumpToStep(Number(link.dataset.stepIndex));
  });

  scroller.addEventListener("scroll", () => {
    // Scrolled to the end (by hand or by arriving lines): keep following; scrolled up: stop.
    follow.checked = atBottom();
    scheduleDraw();
  });
  follow.addEventListener("change", () => {
    if (follow.checked) scrollToBottom();
    scheduleDraw();
  });
  global.addEventListener("resize", scheduleDraw);

  // ---- the socket

  function onFrame(frame) {
    if (frame.type === "log" && frame.job === config.job) received(frame.offset, frame.lines || []);
    else if (frame.type === "resync" && frame.job === config.job) {
      socket.resubscribe("job", { unsubscribe: "job", job: config.job });
    } else if (frame.type === "job" && frame.job && frame.job.id === config.job) {
      showJob(frame.job, frame.steps);
    } else if (frame.type === "run") showSiblings(frame.jobs);
    else if (frame.type === "error") {
      statusElement.dataset.status = "error";
      statusElement.textContent = frame.message || "error";
    }
  }

  const socket = new cicd.LiveSocket(config.socket, {
    onFrame,
    onStatus: (status) => {
      statusElement.dataset.status = status;
      statusElement.textContent = status === "live" ? "live" : status + "…";
    },
  });
  // The offset is read at each (re)connect: the lines held so far are not asked for again.
  socket.subscribe("job", () => ({ subscribe: "job", job: config.job, offset: buffer.length }));
  socket.subscribe("run", () => ({ subscribe: "run", run: config.run }));
  socket.start();
  global.cicdLog = { buffer, rowMap, socket }; // for the browser tests and for debugging
  setInterval(() => cicd.tickDurations(document), 1000);
  followHash();
  scheduleDraw();
})(typeof window !== "undefined" ? window : globalThis);
