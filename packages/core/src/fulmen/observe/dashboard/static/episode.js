// fulmen dashboard: shared helpers and the episode view (transcript, rewards, token viewer).
// Every value from the API is inserted as text (textContent), never as HTML.
"use strict";

const F = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function num(v, digits = 4) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 1e4 ? Math.round(v).toLocaleString("en") : String(Number(v.toPrecision(digits)));
  }

  function clock(t) {
    return t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "–";
  }

  function pretty(value) {
    if (typeof value === "string") return value;
    try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
  }

  // Token colour: probability exp(logprob), red (unlikely) to green (likely).
  function tokenColour(lp) {
    const p = Math.min(1, Math.max(0, Math.exp(lp)));
    return `hsl(${Math.round(120 * p)}, 75%, 80%)`;
  }

  return { el, num, clock, pretty, tokenColour };
})();

const FulmenEpisode = (() => {
  const { el, num, clock, pretty, tokenColour } = F;
  const SPECIAL = /^(<\|[^|]*\|>|<\/?[a-z_]+>)$/;

  function shown(text) {
    if (text === "") return "∅";
    return text.replace(/\n/g, "↵\n").replace(/\t/g, "⇥");
  }

  function tokenSpan(kind, id, text, lp, masked) {
    const span = el("span", { class: `tok ${kind}`, "data-id": id });
    const label = text === null ? `⟨${id}⟩` : shown(text);
    span.textContent = label;
    if (text !== null && SPECIAL.test(text)) span.classList.add("special");
    let title = `token ${id}`;
    if (kind === "resp") {
      if (lp === null || lp === undefined) span.classList.add("nolp");
      else {
        span.dataset.logprob = String(lp);
        title += ` · logprob ${lp.toFixed(3)} · p ${Math.exp(lp).toFixed(3)}`;
        if (masked) span.style.borderBottom = `3px solid ${tokenColour(lp)}`;
        else span.style.background = tokenColour(lp);
      }
      if (masked) span.classList.add("masked");
    }
    span.title = masked ? `${title} · masked (not trained)` : title;
    return span;
  }

  // Which weights produced a call: "<policy> v<version>" with [[policy]] ("(base)" for the frozen
  // base), else "policy v<version>"; null when neither is recorded.
  function policyLabel(call) {
    const v = call.policy_version !== null && call.policy_version !== undefined ? ` v${call.policy_version}` : "";
    if (call.policy) return `${call.policy}${v}`;
    return v ? `policy${v}` : null;
  }

  function tokenViewer(call, compact) {
    const t = call.tokens;
    const box = el("div", { class: "tokens", "data-seq": call.seq });
    const promptIds = t.prompt.ids;
    const prompt = el("details", { class: "prompt-tokens", open: !compact && promptIds.length <= 400 },
      el("summary", { text: `prompt · ${promptIds.length} tokens (context, never trained)` }),
      el("div", { class: "prompt-box" },
        promptIds.map((id, i) => tokenSpan("prompt", id, t.prompt.text ? t.prompt.text[i] : null))));
    const respIds = t.response.ids;
    const lps = t.response.logprobs;
    const state = call.trains === true ? "trained" : call.masked ? "masked" : "not in a training group";
    const produced = policyLabel(call);
    const boundary = el("span", { class: "boundary" },
      `▼ response · `, el("span", { class: "resp-count", text: String(respIds.length) }),
      " tokens · ", produced ? el("span", { class: "call-policy", text: `by ${produced}` }) : null,
      produced ? " · " : "", state + (lps ? "" : " · no logprobs recorded"));
    const resp = el("div", { class: "resp-box" },
      respIds.map((id, i) => tokenSpan("resp", id, t.response.text ? t.response.text[i] : null,
        lps ? lps[i] : null, call.masked)));
    if (!respIds.length) resp.append(el("span", { class: "none", text: "no token ids recorded" }));
    box.append(prompt, boundary, resp);
    return box;
  }

  function message(m) {
    const role = m.role || "?";
    const node = el("div", { class: `msg ${role}` }, el("div", { class: "role", text: role }));
    if (m.content !== null && m.content !== undefined && m.content !== "") {
      node.append(el("pre", { text: pretty(m.content) }));
    }
    for (const tc of m.tool_calls || []) {
      const fn = tc.function || {};
      node.append(el("div", { class: "tool", text: `→ ${fn.name || "?"}(${fn.arguments || ""})` }));
    }
    return node;
  }

  function creditBadge(call) {
    if (call.trains === true) {
      return el("span", { class: "badge trains", text: `trains · advantage ${num(call.advantage, 3)}` });
    }
    if (call.trains === null) return el("span", { class: "badge", text: "no training group" });
    const why = call.skip_reason ? call.skip_reason.replace(/_/g, " ") : "not trained";
    return el("span", { class: "badge masked", text: `masked · ${why}` });
  }

  function callCard(call, opts) {
    const head = el("h3", {},
      el("span", { text: `call ${call.seq}` }),
      call.agent ? el("span", { class: "badge", text: call.agent }) : null,
      call.node ? el("span", { class: "why", text: `node ${call.node}` }) : null,
      creditBadge(call),
      el("span", { class: "why", text: [
        call.finish_reason && `finish ${call.finish_reason}`,
        policyLabel(call),
        `${num(call.latency_s, 2)} s`,
        ...call.flags,
      ].filter(Boolean).join(" · ") }));
    const card = el("section", { class: `card call${call.masked ? " masked" : ""}`, "data-seq": call.seq }, head);
    if (call.credit) card.append(el("div", { class: "why", text: call.credit }));
    if (!opts.compact) {
      if (call.repeated_messages) {
        card.append(el("div", { class: "why", text: `… ${call.repeated_messages} earlier messages` }));
      }
      call.messages.forEach((m) => card.append(message(m)));
    }
    card.append(message(call.response));
    for (const r of call.tool_results) {
      const text = r.error !== undefined ? `✗ ${r.name || "tool"}: ${pretty(r.error)}` : `← ${r.name || "tool"}: ${pretty(r.output)}`;
      card.append(el("div", { class: "tool", text }));
    }
    for (const r of call.step_rewards) {
      card.append(el("div", { class: "why", text: `step reward ${num(r.value)} (${r.label})` }));
    }
    card.append(tokenViewer(call, opts.compact));
    return card;
  }

  function legend() {
    return el("div", { class: "legend" },
      el("span", { text: "response token probability:" }), el("span", { text: "0" }),
      el("span", { class: "bar" }), el("span", { text: "1" }),
      el("span", { class: "tok masked", text: "masked" }),
      el("span", { class: "tok prompt", text: "prompt" }),
      el("span", { class: "tok nolp", text: "no logprob" }));
  }

  // Render one episode page (detail from /api/episodes/{id}) into container.
  function render(detail, container, opts = {}) {
    const e = detail.episode;
    const tk = detail.tokens;
    container.replaceChildren();
    const outcome = detail.summary.outcome;
    container.append(
      el("h1", {}, opts.title || `Episode ${e.id} `, el("span", { class: `badge ${e.status}`, text: e.status })),
      el("div", { class: "card" }, el("dl", { class: "meta" })));
    const meta = container.querySelector("dl.meta");
    for (const [k, v] of [["episode", e.id], ["task", e.task_id], ["split", e.split],
      ["outcome", num(outcome)], ["ended", e.termination || "–"], ["group", e.group_id || "–"],
      ["attempt", e.attempt], ["policy version", e.policy_version ?? "–"],
      ["duration", `${num(e.duration_s, 3)} s`], ["finished", clock(e.finished_at)]]) {
      meta.append(el("div", {}, el("dt", { text: k }), el("dd", { text: String(v), "data-field": k, title: String(v) })));
    }
    if (e.error) container.append(el("div", { class: "card error", text: e.error }));
    if (!opts.compact) {
      container.append(el("h2", { text: "Task" }), el("pre", { class: "card", text: pretty(e.task_data) }));
    }
    if (e.output !== undefined && e.output !== null) {
      container.append(el("h2", { text: "Output" }), el("pre", { class: "card", text: pretty(e.output) }));
    }
    container.append(el("h2", { text: "Rewards" }));
    const rewards = el("table", { id: opts.compact ? null : "rewards" },
      el("tr", {}, el("th", { text: "source" }), el("th", { class: "num", text: "value" }),
        el("th", { text: "agent" }), el("th", { text: "step" }), el("th", { text: "metadata" })));
    for (const r of detail.rewards) {
      rewards.append(el("tr", {}, el("td", { text: r.label }), el("td", { class: "num reward-value", text: num(r.value) }),
        el("td", { text: r.agent || "all" }), el("td", { text: r.step ?? "outcome" }),
        el("td", { text: Object.keys(r.metadata).length ? JSON.stringify(r.metadata) : "" })));
    }
    if (!detail.rewards.length) rewards.append(el("tr", {}, el("td", { class: "none", text: "no rewards recorded" })));
    container.append(rewards);
    container.append(el("h2", { text: `LLM calls (${detail.calls.length})` }),
      el("div", { class: "why token-totals", text: "" },
        `tokens: prompt ${tk.prompt} · response `, el("span", { class: "response-total", text: String(tk.response) }),
        ` (trained ${tk.trained_response}, masked ${tk.masked_response})`
        + (detail.credit.note ? ` · ${detail.credit.note}` : "")),
      legend());
    for (const call of detail.calls) container.append(callCard(call, opts));
  }

  return { render, tokenViewer, policyLabel };
})();
