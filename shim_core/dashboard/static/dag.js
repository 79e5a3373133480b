// The DAG of a run as SVG: waves as columns, a node per task coloured by its status.
// Small runs get labelled nodes and dependency edges; big runs (more than FULL_LIMIT tasks)
// get small squares without text, so 5,000 tasks stay a few thousand elements. Updates
// touch only the nodes that changed, once per animation frame. Task data comes from Redis
// and is untrusted: it only ever reaches the page as text nodes and attribute values.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const FULL_LIMIT = 400; // tasks drawn with labels and edges
  const EDGE_LIMIT = 1500; // edges drawn at most
  const FULL = { w: 176, h: 46, gapX: 44, gapY: 10, rows: 24, top: 28 };
  const COMPACT = { w: 11, h: 11, gapX: 24, gapY: 3, rows: 60, top: 28 };

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function clip(text, n) {
    text = String(text == null ? "" : text);
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  function seconds(ms) {
    if (ms == null || ms < 0) return "";
    const s = Math.round(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0");
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  }

  // Where each task goes: waves are columns, a wave taller than `rows` wraps into more.
  function layout(waves, dims) {
    const at = new Map();
    let x = 16;
    const columns = [];
    let height = 0;
    waves.forEach((wave, w) => {
      const cols = Math.max(1, Math.ceil(wave.length / dims.rows));
      columns.push({ x: x, wave: w, count: wave.length });
      wave.forEach((id, i) => {
        const col = Math.floor(i / dims.rows);
        const row = i % dims.rows;
        const y = dims.top + row * (dims.h + dims.gapY);
        at.set(id, { x: x + col * (dims.w + dims.gapY), y: y });
        height = Math.max(height, y + dims.h);
      });
      x += cols * (dims.w + dims.gapY) - dims.gapY + dims.gapX;
    });
    return { at: at, columns: columns, width: x, height: height + 12 };
  }

  function nodeLine(task, now) {
    const parts = [];
    const names = window.shimWorkerNames || new Map();
    if (task.worker) parts.push(clip(names.get(task.worker) || task.worker, 16));
    if (task.attempts > 1) parts.push("try " + task.attempts);
    const end = task.finished_at || (task.started_at ? now : null);
    if (task.started_at && end) parts.push(seconds(end - task.started_at));
    if (task.cost_usd != null) parts.push("$" + Number(task.cost_usd).toFixed(2));
    return parts.join(" · ");
  }

  function tip(task) {
    const pct = Math.round((task.progress || 0) * 100);
    let text = task.id + ": " + (task.title || "") + "\n" + task.status + " " + pct + "%";
    if (task.worker) text += "\nworker " + task.worker;
    if (task.attempts) text += "\nattempts " + task.attempts;
    if (task.message) text += "\n" + task.message;
    return text;
  }

  // Draw `run` ({waves, tasks}) into `container`; `open(id)` is called on a click.
  function create(container, run, open) {
    const tasks = new Map(run.tasks.map((t) => [t.id, t]));
    const full = tasks.size <= FULL_LIMIT;
    const dims = full ? FULL : COMPACT;
    const waves = run.waves.map((w) => w.filter((id) => tasks.has(id)));
    const placed = new Set(waves.flat());
    const strays = [...tasks.keys()].filter((id) => !placed.has(id));
    if (strays.length) waves.push(strays); // tasks added after the plan (conflict resolutions)
    const plan = layout(waves, dims);
    const root = svg("svg", {
      width: plan.width, height: plan.height, class: full ? "dag full" : "dag compact",
      role: "img", "aria-label": "tasks by wave",
    });
    const labels = svg("g", { class: "labels" });
    for (const c of plan.columns) {
      const label = svg("text", { x: c.x, y: 16 });
      label.textContent = "wave " + (c.wave + 1) + " (" + c.count + ")";
      labels.appendChild(label);
    }
    root.appendChild(labels);
    if (full) root.appendChild(edges(tasks, plan.at));
    const nodes = new Map();
    const group = svg("g", { class: "nodes" });
    for (const [id, pos] of plan.at) {
      const task = tasks.get(id);
      const node = full ? fullNode(pos) : svg("rect", {
        x: pos.x, y: pos.y, width: dims.w, height: dims.h, rx: 2, class: "node s-" + task.status,
        "data-status": task.status, "data-worker": task.worker || "",
      });
      node.dataset.id = id;
      group.appendChild(node);
      nodes.set(id, node);
    }
    root.appendChild(group);
    root.addEventListener("click", (e) => {
      const node = e.target.closest("[data-id]");
      if (node) open(node.dataset.id);
    });
    const tooltip = svg("title");
    root.addEventListener("mouseover", (e) => {
      const node = e.target.closest("[data-id]");
      const task = node && tasks.get(node.dataset.id);
      if (!task) return;
      tooltip.textContent = tip(task);
      node.appendChild(tooltip);
    });
    container.replaceChildren(root);

    let dirty = new Set(full ? tasks.keys() : []); // small squares are drawn painted
    let frame = 0;
    function paint() {
      frame = 0;
      const now = Date.now() + (window.shimClockOffset || 0);
      for (const id of dirty) paintNode(nodes.get(id), tasks.get(id), full, now);
      dirty = new Set();
    }
    paint();
    return {
      // Mark task `id` changed (its object in `tasks` was updated in place).
      update(id) {
        if (!nodes.has(id)) return;
        dirty.add(id);
        if (!frame) frame = requestAnimationFrame(paint);
      },
      tasks: tasks,
      // Refresh the running durations (called once a second while tasks run).
      tick() {
        for (const [id, t] of tasks) if (t.status === "running" || t.status === "claimed") this.update(id);
      },
    };
  }

  function fullNode(pos) {
    const g = svg("g", { class: "node", transform: "translate(" + pos.x + "," + pos.y + ")" });
    g.appendChild(svg("rect", { width: FULL.w, height: FULL.h, rx: 5, class: "box" }));
    g.appendChild(svg("rect", { x: 0, y: FULL.h - 4, width: 0, height: 4, class: "bar" }));
    const title = svg("text", { x: 8, y: 17, class: "title" });
    const line = svg("text", { x: 8, y: 34, class: "line" });
    g.append(title, line);
    return g;
  }

  function paintNode(node, task, full, now) {
    if (!node || !task) return;
    node.setAttribute("class", "node s-" + task.status);
    node.dataset.status = task.status;
    node.dataset.worker = task.worker || "";
    if (!full) return;
    const [, bar, title, line] = node.childNodes;
    bar.setAttribute("width", String(Math.round(FULL.w * Math.min(1, task.progress || 0))));
    title.textContent = clip(task.title || task.id, 25);
    line.textContent = nodeLine(task, now);
  }

  function edges(tasks, at) {
    const g = svg("g", { class: "edges" });
    let drawn = 0;
    for (const [id, task] of tasks) {
      const to = at.get(id);
      for (const dep of task.deps || []) {
        const from = at.get(dep);
        if (!from || !to || ++drawn > EDGE_LIMIT) continue;
        const x1 = from.x + FULL.w, y1 = from.y + FULL.h / 2, x2 = to.x, y2 = to.y + FULL.h / 2;
        const mid = (x1 + x2) / 2;
        g.appendChild(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
      }
    }
    return g;
  }

  window.ShimDag = { create: create, seconds: seconds, clip: clip };
})();
