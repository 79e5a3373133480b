// The SHIM dashboard page: three views (#/ the runs, #/run/ID a run's DAG, #/task/ID a task)
// and the workers beside them, kept live by one server-sent event stream per view: a snapshot
// first, then the events of the durable history and ticks (workers, heartbeats, pause).
// Everything shown comes from Redis and is untrusted: it reaches the page as text only
// (textContent, attribute values), never as HTML.
"use strict";

(function () {
  const { seconds, clip } = window.ShimDag;
  const FINAL = new Set(["complete", "failed", "cancelled"]);
  const RUNNING = ["claimed", "running"];
  const QUEUED = ["waiting", "pending", "retrying"];
  const view = document.getElementById("view");
  let source = null;
  let current = null; // the open view's live state
  let lastTick = {};

  // ------------------------------------------------------------------ helpers
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k.startsWith("data-")) node.setAttribute(k, String(v));
      else node[k] = v;
    }
    for (const child of children) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const money = (v) => (v == null ? "" : "$" + Number(v).toFixed(2));
  const pct = (v) => Math.round((v || 0) * 100) + "%";
  const now = () => Date.now() + (window.shimClockOffset || 0);
  const eta = (s) => (s == null ? "no live worker" : s === 0 ? "done" : "ETA " + seconds(s * 1000));
  const badge = (status) => el("span", { class: "badge s-" + status, text: status });

  function bar(fraction) {
    const fill = el("span", { class: "fill" });
    fill.style.width = pct(fraction);
    return el("span", { class: "progress" }, fill);
  }

  function debounce(fn, ms) {
    let timer = 0;
    return () => {
      if (!timer) timer = setTimeout(() => { timer = 0; fn(); }, ms);
    };
  }

  function toast(text) {
    const box = document.getElementById("toast");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
    return body;
  }

  async function act(path, question) {
    if (question && !window.confirm(question)) return null;
    try {
      const r = await fetch(path, {
        method: "POST", credentials: "same-origin", headers: { "X-Shim-Action": "1" },
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
      if (current && current.refresh) current.refresh(); // at once, not after the events
      return body;
    } catch (e) {
      toast(String(e.message || e));
      return null;
    }
  }

  const enc = encodeURIComponent;
  const taskLink = (id, text) => el("a", { href: "#/task/" + enc(id), text: text || id });

  // -------------------------------------------------------------- live stream
  // A stream that ends (the server stopped, Redis away: "unavailable") is reconnected by the
  // EventSource a second later, and catches up from its last event id; one the browser gave up
  // on (an HTTP error) is opened again every 5 s; "failure" (no such run or task) is final.
  function connect(query) {
    if (source) source.close();
    const conn = document.getElementById("conn");
    const say = (state, text, why) => {
      conn.dataset.state = state;
      conn.textContent = text;
      conn.title = why || "";
    };
    const es = new EventSource("/api/live" + query);
    source = es;
    es.onopen = () => say("live", "live");
    es.onerror = () => {
      if (es.readyState !== EventSource.CLOSED) {
        if (conn.dataset.state !== "down") say("down", "reconnecting…");
        return;
      }
      say("down", "disconnected", "trying again in 5 s");
      setTimeout(() => { if (source === es) connect(query); }, 5000);
    };
    es.addEventListener("snapshot", (e) => {
      const data = JSON.parse(e.data);
      onTick(data);
      if (current) current.snapshot(data);
    });
    es.addEventListener("tick", (e) => onTick(JSON.parse(e.data)));
    es.addEventListener("events", (e) => {
      if (current) current.events(JSON.parse(e.data));
    });
    es.addEventListener("unavailable", (e) => say("down", "reconnecting…", JSON.parse(e.data).error));
    es.addEventListener("failure", (e) => {
      es.close();
      say("down", "stopped");
      view.replaceChildren(el("p", { class: "error", text: JSON.parse(e.data).error }));
    });
  }

  function onTick(data) {
    lastTick = data;
    window.shimClockOffset = data.server_time - Date.now();
    document.getElementById("namespace").textContent = "namespace " + (data.namespace || "");
    document.getElementById("paused-badge").hidden = !data.paused;
    const toggle = document.getElementById("pause-toggle");
    toggle.hidden = false;
    toggle.textContent = data.paused ? "Resume" : "Pause";
    toggle.dataset.paused = data.paused ? "1" : "";
    window.shimWorkerNames = new Map((data.workers || []).map((w) => [w.id, w.name]));
    renderWorkers(data.workers || []);
  }

  document.getElementById("pause-toggle").addEventListener("click", async (e) => {
    const paused = e.currentTarget.dataset.paused === "1";
    const body = await act(paused ? "/api/resume" : "/api/pause",
      paused ? null : "Stop every worker of the namespace from claiming new tasks?");
    if (body) onTick({ ...lastTick, paused: body.paused });
  });

  function renderWorkers(workers) {
    const rows = workers.map((w) => {
      const beat = w.age_s == null ? "-" : seconds(w.age_s * 1000) + " ago";
      const current = el("td", { class: "current" });
      w.running.slice(0, 3).forEach((id, i) => {
        if (i) current.append(", ");
        current.append(taskLink(id, clip(id, 28)));
      });
      if (w.running.length > 3) current.append(" +" + (w.running.length - 3));
      return el("tr", { class: w.gone ? "gone" : "", "data-worker": w.id, "data-status": w.status },
        el("td", { title: w.id + (w.host ? " on " + w.host : ""), text: clip(w.name, 26) }),
        el("td", {}, badge(w.status)), current, el("td", { text: beat }),
        el("td", { text: w.completed }), el("td", { text: w.failed }));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 6, class: "muted", text: "no workers" })));
    document.querySelector("#workers tbody").replaceChildren(...rows);
  }

  // ----------------------------------------------------------------- overview
  function overview() {
    const body = el("tbody");
    view.replaceChildren(el("h1", { text: "Runs" }), el("table", { class: "grid runs" },
      el("thead", {}, el("tr", {}, ...["run", "progress", "tasks", "time left", "cost", "started", ""]
        .map((h) => el("th", { text: h })))), body));
    const load = async () => {
      try { draw((await api("/api/runs")).runs); } catch (e) { toast(e.message); }
    };
    const refresh = debounce(load, 1000);
    function draw(runs) {
      const rows = runs.map((r) => r.error ? broken(r) : el("tr", { "data-run": r.run_id },
        el("td", {}, el("a", { href: "#/run/" + enc(r.run_id), text: r.name || r.run_id }),
          el("div", { class: "muted", text: r.run_id })),
        el("td", {}, bar(r.percent), " ", pct(r.percent)),
        el("td", { text: countsLine(r) }),
        el("td", { text: r.finished ? (r.ok ? "done" : "finished") : eta(r.eta_s) }),
        el("td", { text: money(r.cost_usd) + (r.budget_usd ? " / " + money(r.budget_usd) : "") }),
        el("td", { text: new Date(r.created_at).toLocaleString() }),
        el("td", {}, runButtons(r.run_id))));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 7, class: "muted", text: "no runs yet" })));
      body.replaceChildren(...rows);
    }
    const broken = (r) => el("tr", { "data-run": r.run_id, class: "broken" },
      el("td", { text: r.run_id }), el("td", { colSpan: 5, class: "error", text: r.error }),
      el("td", {}, runButtons(r.run_id)));
    return { snapshot: (d) => draw(d.runs || []), events: refresh, refresh: load };
  }

  // "n/N finished, …": n counts every task that reached an end (complete, failed or
  // cancelled), as the bar does and as the CLI's progress line says.
  function countsLine(s) {
    const c = s.counts || {};
    const parts = [s.finished_tasks + "/" + s.total + " finished"];
    if (s.running_tasks) parts.push(s.running_tasks + " running");
    if (s.queued_tasks) parts.push(s.queued_tasks + " queued");
    for (const k of ["failed", "cancelled", "corrupt"]) if (c[k]) parts.push(c[k] + " " + k);
    return parts.join(", ");
  }

  // The server's totals (runs.summarize), from a run's rows as its events move them.
  function tally(tasks) {
    const counts = {};
    for (const t of tasks) counts[t.status] = (counts[t.status] || 0) + 1;
    const sum = (names) => names.reduce((n, k) => n + (counts[k] || 0), 0);
    return { counts, total: tasks.length, finished_tasks: sum([...FINAL]),
      running_tasks: sum(RUNNING), queued_tasks: sum(QUEUED) };
  }

  function runButtons(runId) {
    return el("span", { class: "actions" },
      el("button", { type: "button", class: "cancel-run", text: "Cancel",
        onclick: () => act("/api/runs/" + enc(runId) + "/cancel", "Cancel every unfinished task of run " + runId + "?") }),
      el("button", { type: "button", class: "retry-run", text: "Retry failed",
        onclick: () => act("/api/runs/" + enc(runId) + "/retry") }));
  }

  // ---------------------------------------------------------------------- run
  function runView(runId) {
    const head = el("div", { class: "run-head" }, el("h1", { text: "Run " + runId }));
    const summary = el("div", { id: "run-summary", class: "summary" });
    const graph = el("div", { class: "graph" }, el("p", { class: "muted", text: "loading…" }));
    view.replaceChildren(head, summary, legend(), graph);
    let dag = null;
    let info = null;
    const prefix = runId + ":";
    const fetchSummary = debounce(async () => {
      try { info = await api("/api/runs/" + enc(runId) + "/summary"); drawSummary(); } catch (e) { /* next event */ }
    }, 1500);
    function drawSummary() {
      if (!info || !dag) return;
      const tasks = [...dag.tasks.values()];
      const totals = tally(tasks);
      const done = tasks.reduce((s, t) => s + (FINAL.has(t.status) ? 1 : t.progress || 0), 0);
      const fraction = tasks.length ? done / tasks.length : 1;
      summary.dataset.complete = String(totals.counts.complete || 0);
      summary.dataset.finished = String(totals.finished_tasks);
      summary.dataset.total = String(tasks.length);
      const finished = totals.finished_tasks === tasks.length;
      summary.replaceChildren(el("strong", { text: info.name || "" }), " ", bar(fraction), " ",
        pct(fraction) + " · " + countsLine(totals) + " · " +
        (finished ? "finished" : eta(info.eta_s)) + (info.cost_usd ? " · " + money(info.cost_usd) : ""),
        " ", runButtons(runId));
    }
    return {
      snapshot(data) {
        info = data.run.summary;
        dag = window.ShimDag.create(graph, data.run, (id) => { location.hash = "#/task/" + enc(prefix + id); });
        drawSummary();
      },
      events(events) {
        if (!dag) return;
        for (const ev of events) {
          if (!ev.task || !ev.task.startsWith(prefix)) continue;
          const task = dag.tasks.get(ev.task.slice(prefix.length));
          if (task) { apply(task, ev); dag.update(task.id); }
        }
        drawSummary();
        fetchSummary();
      },
      tick() { if (dag) dag.tick(); },
    };
  }

  // An event's news applied to a task row in place.
  function apply(task, ev) {
    if (ev.status) task.status = ev.status;
    if (ev.worker) task.worker = ev.worker;
    if (ev.attempt != null) task.attempts = ev.attempt;
    if (ev.progress != null) task.progress = ev.progress;
    if (ev.message != null) task.message = ev.message;
    if (ev.cost_usd != null) task.cost_usd = ev.cost_usd;
    if (ev.type === "started") { task.started_at = ev.ts; delete task.finished_at; }
    if (ev.status === "complete") task.progress = 1;
    if (ev.status && FINAL.has(ev.status)) task.finished_at = ev.ts;
    if (ev.status === "pending" || ev.status === "waiting") { task.progress = 0; delete task.finished_at; }
  }

  function legend() {
    return el("div", { class: "legend" }, ...["waiting", "pending", "running", "retrying",
      "complete", "failed", "cancelled"].map((s) => badge(s)));
  }

  // --------------------------------------------------------------------- task
  // The task's events come with the stream (its snapshot has those up to it, the events
  // messages the next ones); its state is read again when one of them (or of a dependency's)
  // arrives. Only the log, which has no events, is polled: its tail, every 2 s while unfinished.
  function taskView(taskId) {
    const box = el("div", { class: "task" }, el("p", { class: "muted", text: "loading…" }));
    view.replaceChildren(box);
    let data = null;
    let history = [];
    let timer = 0;
    let closed = false;
    const load = async () => {
      try {
        data = await api("/api/tasks/" + enc(taskId));
        box.replaceChildren(...taskSections(data, history));
        if (!timer) timer = setTimeout(pollLog, 2000);
      } catch (e) { box.replaceChildren(el("p", { class: "error", text: e.message })); }
    };
    const reload = debounce(load, 300);
    async function pollLog() {
      timer = 0;
      if (closed || !data || FINAL.has(data.status)) return;
      try {
        const body = await api("/api/tasks/" + enc(taskId) + "/log");
        data.log = body.log;
        const pre = box.querySelector("pre.log");
        if (pre) pre.textContent = logText(body.log);
      } catch (e) { /* the next poll */ }
      if (!closed && !timer) timer = setTimeout(pollLog, 2000);
    }
    return {
      snapshot(d) { history = d.history || []; load(); },
      refresh: load,
      events(events) {
        const own = events.filter((e) => e.task === taskId);
        history.push(...own);
        const deps = new Set(data ? data.dependencies.map((d) => d.id) : []);
        if (own.length || events.some((e) => e.task && deps.has(e.task))) reload();
      },
      close() { closed = true; clearTimeout(timer); },
    };
  }

  const logText = (lines) => (lines.length ? lines.join("\n") : "(no log lines)");

  function taskSections(t, history) {
    const started = t.started_at ? new Date(t.started_at).toLocaleTimeString() : "-";
    const took = t.started_at ? seconds((t.finished_at || now()) - t.started_at) : "-";
    const facts = [["status", badge(t.status)], ["progress", el("span", {}, bar(t.progress), " ", pct(t.progress), t.message ? " " + t.message : "")],
      ["worker", t.worker || "-"], ["attempts", t.attempts + " of " + t.max_attempts + (t.stalls ? ", " + t.stalls + " stalled" : "")],
      ["type", t.type + (t.executor ? " (" + t.executor + ")" : "")], ["priority", t.priority],
      ["started", started], ["duration", took]];
    if (t.run_id) facts.unshift(["run", el("a", { href: "#/run/" + enc(t.run_id), text: t.run_id })]);
    const list = el("dl", { class: "facts" });
    for (const [k, v] of facts) list.append(el("dt", { text: k }), el("dd", {}, v));
    const out = [
      el("h1", {}, el("span", { id: "task-title", text: t.title || t.id }), " ", el("span", { class: "muted", text: t.id })),
      el("div", { class: "actions" },
        el("button", { type: "button", id: "cancel-task", text: "Cancel", disabled: FINAL.has(t.status),
          onclick: () => act("/api/tasks/" + enc(t.id) + "/cancel", "Cancel task " + t.id + " and its dependents?") }),
        el("button", { type: "button", id: "retry-task", text: "Retry",
          disabled: t.status !== "failed" && t.status !== "cancelled",
          onclick: () => act("/api/tasks/" + enc(t.id) + "/retry") })),
      list,
    ];
    if (t.description) out.push(el("p", { class: "description", text: t.description }));
    if (t.result) out.push(section(t.result.success ? "Result" : "Error", resultBody(t.result)));
    if (t.agent) out.push(section("Agent", agentBody(t.agent)));
    if (t.dependencies.length) out.push(section("Dependencies", el("ul", {}, ...t.dependencies.map((d) =>
      el("li", {}, taskLink(d.id), " ", badge(d.status), d.result ? " " + clip(summaryOf(d.result), 160) : "")))));
    out.push(section("Log", el("pre", { class: "log", text: logText(t.log) })));
    if (t.checkpoint) out.push(section("Latest checkpoint", el("pre", { text:
      "attempt " + t.checkpoint.attempt + ", " + pct(t.checkpoint.progress) + "\n" + json(t.checkpoint.state) })));
    if (history.length) out.push(section("Attempts and events", el("ol", { class: "history" }, ...history.map((e) =>
      el("li", { text: new Date(e.ts).toLocaleTimeString() + "  " + e.type + (e.status ? " → " + e.status : "") +
        (e.worker ? "  " + e.worker : "") + (e.attempt ? "  attempt " + e.attempt : "") + (e.error ? "  " + e.error : "") })))));
    return out;
  }

  function resultBody(r) {
    const parts = [];
    if (r.error) parts.push(el("pre", { class: "error", text: r.error }));
    if (r.outcome) parts.push(el("p", { text: "outcome " + r.outcome }));
    if (r.output != null) parts.push(el("pre", { text: clip(json(r.output), 20000) }));
    if (r.files_modified.length) parts.push(el("p", { text: "files: " + r.files_modified.join(", ") }));
    return el("div", {}, ...parts);
  }

  function agentBody(a) {
    const list = el("dl", { class: "facts" });
    for (const k of ["agent", "branch", "session_id", "commit", "summary"]) {
      if (a[k]) list.append(el("dt", { text: k.replace("_", " ") }), el("dd", { text: a[k] }));
    }
    if (a.cost_usd != null) list.append(el("dt", { text: "cost" }), el("dd", { text: money(a.cost_usd) }));
    if (a.files_changed.length) list.append(el("dt", { text: "files changed" }), el("dd", { text: a.files_changed.join(", ") }));
    return list;
  }

  const json = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));
  const summaryOf = (r) => r.error || (r.output && r.output.summary) || json(r.output);
  const section = (title, body) => el("section", {}, el("h2", { text: title }), body);

  // ------------------------------------------------------------------- router
  function decode(part) {
    try { return decodeURIComponent(part); } catch (e) { return part; } // a malformed %-escape
  }

  function navigate() {
    if (current && current.close) current.close();
    const parts = (location.hash.replace(/^#\/?/, "") || "").split("/").map(decode);
    const route = { view: parts[0] || "runs", id: parts.slice(1).join("/") };
    if (route.view === "run" && route.id) {
      current = runView(route.id);
      connect("?run=" + enc(route.id));
    } else if (route.view === "task" && route.id) {
      current = taskView(route.id);
      connect("?task=" + enc(route.id));
    } else {
      current = overview();
      connect("");
    }
    document.title = "SHIM · " + (route.id || "runs");
  }

  window.addEventListener("hashchange", navigate);
  setInterval(() => { if (current && current.tick) current.tick(); }, 1000);
  navigate();
})();
