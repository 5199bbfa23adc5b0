// fulmen dashboard: router and pages (curves, episodes, episode, compare), polling the JSON API.
"use strict";

(() => {
  const { el, num, clock } = F;
  const page = document.getElementById("page");
  const status = document.getElementById("status");
  const TIMEOUT_MS = 15000;
  let timers = [];
  let generation = 0;

  async function api(path) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
    try {
      const res = await fetch(path, { credentials: "same-origin", signal: ctrl.signal });
      const body = await res.json();
      if (!res.ok) throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  function every(ms, fn) {
    const gen = generation;
    let busy = false;
    const tick = async () => {
      if (busy || gen !== generation) return;
      busy = true;
      try { await fn(); } catch (err) { showError(err); } finally { busy = false; }
    };
    tick();
    timers.push(setInterval(tick, ms));
  }

  function showError(err) {
    status.textContent = `error: ${err.message}`;
    status.classList.add("error");
  }

  function failedCalls(counts) {
    const keys = Object.keys(counts);
    if (!keys.length) return [];
    const total = keys.reduce((sum, k) => sum + counts[k], 0);
    const detail = keys.map((k) => `${k} ×${counts[k]}`).join(", ");
    return [el("span", { id: "failed-calls", text: `${total} failed LLM calls (${detail})` }), " · "];
  }

  function header(s) {
    status.classList.remove("error");
    status.replaceChildren(
      `${s.source} · step `, el("span", { id: "step", text: s.step ?? "–" }), " · ",
      el("span", { id: "finished-count", text: String(s.finished) }), " finished · ",
      el("span", { id: "running-count", text: String(s.running) }), " running · ",
      ...failedCalls(s.failed_calls || {}),
      s.alarms.length ? el("a", { href: "#/", class: "badge critical", text: `${s.alarms.length} alarm(s)` }) : "no alarms",
      ` · updated ${clock(s.updated_at)}`);
  }

  // ---------------------------------------------------------------------------- curves page

  function alarms(list) {
    const box = el("div", { id: "alarms" });
    if (!list.length) box.append(el("div", { class: "none", text: "no alarms" }));
    for (const a of list) {
      box.append(el("div", { class: `alarm ${a.severity}`, "data-kind": a.kind },
        el("span", { class: `badge ${a.severity}`, text: a.severity }), " ",
        el("strong", { text: a.kind }), a.step !== null ? ` · step ${a.step}` : "", ` · ${a.message}`,
        el("div", { class: "look", text: `look at: ${a.what_to_look_at}` })));
    }
    return box;
  }

  function agentsTable(agents) {
    const t = el("table", { id: "agents" }, el("tr", {}, ["agent", "episodes", "LLM calls", "tools / call", "reward", "success"]
      .map((h, i) => el("th", { class: i ? "num" : null, text: h }))));
    for (const a of agents) {
      t.append(el("tr", {}, el("td", { text: a.agent }), el("td", { class: "num", text: a.episodes }),
        el("td", { class: "num", text: a.llm_calls }), el("td", { class: "num", text: num(a.tool_call_rate, 2) }),
        el("td", { class: "num", text: num(a.reward_mean, 3) }),
        el("td", { class: "num", text: `${Math.round(100 * a.success_rate)} %` })));
    }
    if (!agents.length) t.append(el("tr", {}, el("td", { class: "none", text: "no finished episodes yet" })));
    return t;
  }

  // Per-policy table ([[policy]] runs only): agents, served version, the step's own metrics.
  const POLICY_COLUMNS = [["step calls", "llm_calls"], ["rows", "rows"], ["response tokens", "response_tokens"],
    ["loss", "loss"], ["kl", "kl"], ["entropy", "entropy"], ["clip fraction", "clip_fraction"], ["grad norm", "grad_norm"]];

  function policiesTable(policies) {
    const t = el("table", { id: "policies" }, el("tr", {}, ["policy", "agents", "version", ...POLICY_COLUMNS.map((c) => c[0])]
      .map((h, i) => el("th", { class: i > 1 ? "num" : null, text: h }))));
    for (const p of policies) {
      t.append(el("tr", { "data-policy": p.name }, el("td", { text: p.name }), el("td", { text: p.agents.join(", ") || "–" }),
        el("td", { class: "num", text: p.version === null ? "–" : `v${p.version}` }),
        POLICY_COLUMNS.map(([, key]) => el("td", { class: "num", "data-key": key, text: num(p.metrics[key]) }))));
    }
    return t;
  }

  function drawChart(div, chart) {
    const traces = chart.series.map((s) => ({ x: s.x, y: s.y, name: s.label, mode: "lines+markers", type: "scatter" }));
    const empty = chart.series.every((s) => !s.x.length);
    const last = Math.max(1, ...chart.series.flatMap((s) => s.x));
    const layout = {
      title: { text: chart.title + (empty ? " (no data yet)" : ""), font: { size: 14 } },
      margin: { l: 55, r: 20, t: 40, b: 75 },
      xaxis: { title: { text: "step", standoff: 4 }, rangemode: "tozero", tick0: 0, dtick: Math.max(1, Math.ceil(last / 10)) },
      legend: { orientation: "h", y: -0.32 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    };
    Plotly.react(div, traces, layout, { displayModeBar: false, responsive: true, staticPlot: false });
  }

  function curvesPage() {
    const metrics = el("div", { class: "grid", id: "step-metrics" });
    const alarmBox = el("div", { class: "card" });
    const agentBox = el("div", {});
    const policyBox = el("div", {});
    const charts = el("div", { class: "charts", id: "charts" });
    page.replaceChildren(el("h1", { text: "Training" }), el("h2", { text: "Alarms" }), alarmBox,
      el("h2", { text: "Current step" }), metrics, policyBox, el("h2", { text: "Curves" }), charts,
      el("h2", { text: "Agents" }), agentBox);
    const divs = {};
    every(2000, async () => {
      const [s, c] = await Promise.all([api("/api/summary"), api("/api/curves")]);
      header(s);
      alarmBox.replaceChildren(alarms(s.alarms));
      metrics.replaceChildren(...(s.step_metrics.length ? s.step_metrics.map((m) =>
        el("div", { class: "tile", "data-metric": m.label }, el("div", { class: "label", text: m.label }),
          el("div", { class: "value", text: num(m.value) }))) : [el("div", { class: "none", text: "no training metrics yet" })]));
      agentBox.replaceChildren(agentsTable(s.agents));
      policyBox.replaceChildren(...(s.policies.length ? [el("h2", { text: "Policies" }), policiesTable(s.policies)] : []));
      for (const chart of c.charts) {
        if (!divs[chart.id]) {
          divs[chart.id] = el("div", { class: "chart", id: `chart-${chart.id}` });
          charts.append(divs[chart.id]);
        }
        drawChart(divs[chart.id], chart);
      }
    });
  }

  // --------------------------------------------------------------------------- episodes page

  const FILTERS = ["task", "agent", "status", "split", "min_reward", "max_reward"];

  function select(name, label, values, current) {
    return el("label", {}, label, el("select", { name },
      el("option", { value: "", text: "any" }),
      values.map((v) => el("option", { value: v, selected: v === current, text: v }))));
  }

  function episodesPage(query) {
    const form = el("form", { class: "filters", id: "filters" });
    const counts = el("div", { class: "pager" });
    const table = el("table", { id: "episode-table" });
    page.replaceChildren(el("h1", { text: "Episodes" }), form, counts, table);
    let facetsKey = "";
    const offset = Number(query.get("offset") || 0);
    const drawForm = (facets) => {
      form.replaceChildren(
        el("label", {}, "task", el("input", { name: "task", value: query.get("task") || "", placeholder: "task id contains" })),
        select("agent", "agent", facets.agents, query.get("agent")),
        select("status", "status", facets.statuses, query.get("status")),
        select("split", "split", facets.splits, query.get("split")),
        el("label", {}, "reward ≥", el("input", { name: "min_reward", value: query.get("min_reward") || "", size: 6 })),
        el("label", {}, "reward ≤", el("input", { name: "max_reward", value: query.get("max_reward") || "", size: 6 })),
        el("button", { type: "submit", text: "Filter" }),
        el("button", { type: "button", text: "Clear", onclick: () => { location.hash = "#/episodes"; } }));
    };
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const name of FILTERS) {
        const v = form.elements[name].value.trim();
        if (v) q.set(name, v);
      }
      location.hash = `#/episodes?${q}`;
    });
    every(3000, async () => {
      const q = new URLSearchParams();
      for (const name of FILTERS) if (query.get(name)) q.set(name, query.get(name));
      q.set("offset", String(offset));
      q.set("limit", "50");
      const [s, list] = await Promise.all([api("/api/summary"), api(`/api/episodes?${q}`)]);
      header(s);
      const key = JSON.stringify(list.facets);
      if (key !== facetsKey) { facetsKey = key; drawForm(list.facets); }
      const pageLink = (off, text) => {
        const p = new URLSearchParams(q); p.set("offset", String(Math.max(0, off))); p.delete("limit");
        return el("a", { href: `#/episodes?${p}`, text });
      };
      counts.replaceChildren(el("span", { id: "matching-count", text: String(list.matching) }), " of ",
        el("span", { id: "total-count", text: String(list.total) }), " finished episodes match",
        offset > 0 ? pageLink(offset - 50, "← newer") : "",
        offset + 50 < list.matching ? pageLink(offset + 50, "older →") : "");
      table.replaceChildren(el("tr", {}, ["finished", "episode", "task", "split", "agents", "calls", "tools", "reward", "response tokens", "ended"]
        .map((h) => el("th", { class: ["calls", "reward", "response tokens"].includes(h) ? "num" : null, text: h }))));
      for (const e of list.episodes) {
        const ended = e.termination === "completed" ? "ok" : (e.termination || e.status);
        table.append(el("tr", { "data-episode-id": e.episode_id },
          el("td", { text: clock(e.finished_at) }),
          el("td", {}, el("a", { href: `#/episode/${encodeURIComponent(e.episode_id)}`, text: e.episode_id })),
          el("td", { text: e.task_id }), el("td", { text: e.split }),
          el("td", { text: e.agents.filter((a) => a !== "(unnamed)").join(", ") || "–" }),
          el("td", { class: "num", text: e.llm_calls }),
          el("td", { text: e.tool_calls.join(", ") || "–" }),
          el("td", { class: "num reward", text: num(e.outcome) }),
          el("td", { class: "num", text: e.response_tokens }),
          el("td", {}, el("span", { class: `badge ${e.status}`, text: ended }))));
      }
      if (!list.episodes.length) table.append(el("tr", {}, el("td", { class: "none", text: "no episodes match" })));
    });
  }

  // ---------------------------------------------------------------------------- episode page

  async function episodePage(id) {
    const box = el("div", { id: "episode" }, el("div", { class: "none", text: "loading…" }));
    page.replaceChildren(el("a", { href: "#/episodes", text: "← episodes" }), box);
    const gen = generation;
    api("/api/summary").then(header).catch(showError);
    try {
      const detail = await api(`/api/episodes/${encodeURIComponent(id)}`);
      if (gen === generation) FulmenEpisode.render(detail, box);
    } catch (err) {
      box.replaceChildren(el("div", { class: "error", text: err.message }));
    }
  }

  // ---------------------------------------------------------------------------- compare page

  async function comparePage(query) {
    const gen = generation;
    const [s, options] = await Promise.all([api("/api/summary"), api("/api/compare")]);
    header(s);
    if (gen !== generation) return;
    if (!options.tasks.length) {
      page.replaceChildren(el("h1", { text: "Compare checkpoints" }),
        el("div", { class: "none", text: "no held-out evaluations (split 'eval') recorded in this store yet" }));
      return;
    }
    const task = query.get("task") || options.tasks[0].task_id;
    const versions = (options.tasks.find((t) => t.task_id === task) || options.tasks[0]).versions;
    const a = query.get("a") || String(versions[0]);
    const b = query.get("b") || String(versions[versions.length - 1]);
    const form = el("form", { class: "filters", id: "compare-form" },
      select("task", "held-out task", options.tasks.map((t) => t.task_id), task),
      select("a", "left: policy version", versions.map(String), a),
      select("b", "right: policy version", versions.map(String), b),
      el("button", { type: "submit", text: "Compare" }));
    const rates = el("div", { class: "why", id: "compare-success" }, "held-out success per policy version: ",
      options.versions.map((v) => `v${v} ${Math.round(100 * options.success[String(v)])} %`).join(" · "));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams({ task: form.elements.task.value, a: form.elements.a.value, b: form.elements.b.value });
      location.hash = `#/compare?${q}`;
    });
    const left = el("div", { id: "compare-a" }), right = el("div", { id: "compare-b" });
    page.replaceChildren(el("h1", { text: "Compare checkpoints on one held-out task" }), form, rates,
      el("div", { class: "compare" }, left, right));
    const pair = await api(`/api/compare?${new URLSearchParams({ task, a, b })}`);
    if (gen !== generation) return;
    for (const [box, side] of [[left, pair.a], [right, pair.b]]) {
      if (side.episode) FulmenEpisode.render(side.episode, box, { compact: true, title: `policy v${side.version} · ` });
      else box.replaceChildren(el("div", { class: "none", text: `no evaluation of ${task} with policy v${side.version}` }));
    }
  }

  // --------------------------------------------------------------------------------- router

  function route() {
    timers.forEach(clearInterval);
    timers = [];
    generation += 1;
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, qs] = hash.split("?");
    const query = new URLSearchParams(qs || "");
    const parts = path.split("/").filter(Boolean);
    const section = parts[0] || "curves";
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active",
      a.dataset.nav === (section === "episode" ? "episodes" : section)));
    const fail = (err) => { page.replaceChildren(el("div", { class: "error", text: err.message })); };
    if (section === "episodes") episodesPage(query);
    else if (section === "episode" && parts[1]) episodePage(decodeURIComponent(parts[1])).catch(fail);
    else if (section === "compare") comparePage(query).catch(fail);
    else curvesPage();
  }

  window.addEventListener("hashchange", route);
  route();
})();
