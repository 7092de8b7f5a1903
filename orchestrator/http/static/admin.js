// The operator page: polls /admin/api/state and /admin/api/logs every second and renders them.
// Everything from the server is inserted as text (never as HTML): names come from clients.
"use strict";

(() => {
  const POLL_MS = 1000;
  const MAX_LOG_LINES = 2000;
  const token = new URLSearchParams(location.search).get("token");
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const $ = (id) => document.getElementById(id);
  const rendered = {};  // table id -> JSON of what it shows, so unchanged tables are left alone
  let instance = null;
  let logSeq = 0;

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  const badge = (text, kind) => el("span", { className: `badge ${kind || text.toLowerCase()}` }, text);
  const short = (id) => el("span", { className: "id", title: id }, String(id).slice(0, 8));
  const mib = (bytes) => (bytes ? `${(bytes / 1048576).toFixed(1)} MiB` : "–");

  async function api(path, options = {}) {
    const response = await fetch(path, { cache: "no-store", ...options, headers });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${response.status} ${body.error || response.statusText}`);
    return body;
  }

  function setStatus(ok, text) {
    const status = $("status");
    status.className = `badge ${ok ? "running" : "fatal"}`;
    status.textContent = text;
  }

  function renderTable(id, items, row) {
    const json = JSON.stringify(items);
    if (rendered[id] === json) return;
    rendered[id] = json;
    const columns = $(id).tHead.rows[0].cells.length;
    const rows = items.length ? items.map(row) : [el("tr", { className: "empty" }, el("td", { colSpan: columns }, "none"))];
    $(id).tBodies[0].replaceChildren(...rows);
    $(`${id}-count`).textContent = `(${items.length})`;
  }

  async function act(question, path, button) {
    if (!confirm(question)) return;
    button.disabled = true;
    try {
      await api(path, { method: "POST" });
      await pollState();
    } catch (error) {
      setStatus(false, `action failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function sessionRow(s) {
    const names = Object.fromEntries(s.sessionUsers.map((id, i) => [id, s.sessionUserNames[i]]));
    const members = el("ul", { className: "plain" }, ...s.sessionUsers.map((id) => el("li", {},
      names[id], " ", short(id),
      id === s.sessionAdministrator ? badge("admin", "role") : "",
      id === s.sessionMaster ? badge("master", "role") : "")));
    const streams = el("ul", { className: "plain" }, ...Object.entries(s.streams)
      .filter(([, kinds]) => kinds.length)
      .map(([id, kinds]) => el("li", {}, `${names[id]}: ${kinds.join(", ")}`)));
    const close = el("button", {
      className: "danger", "data-action": "close-session", "data-session": s.sessionId,
      onclick: () => act(`Close session "${s.sessionName}"? Its ${s.sessionUsers.length} member(s) will be told.`,
        `/admin/api/sessions/${encodeURIComponent(s.sessionId)}/close`, close),
    }, "close");
    return el("tr", {},
      el("td", {}, el("strong", {}, s.sessionName), " ", short(s.sessionId),
        s.sessionDescription ? el("div", { className: "muted" }, s.sessionDescription) : ""),
      el("td", {}, s.sessionProtocol), el("td", {}, members), el("td", {}, streams), el("td", {}, close));
  }

  function userRow(u, sessionNames) {
    const subscriptions = u.subscriptions.map((key) => key.split("::")[1] || key);
    return el("tr", {}, el("td", {}, u.userName), el("td", {}, short(u.userId)),
      el("td", {}, u.sessionId ? sessionNames[u.sessionId] ?? u.sessionId : el("span", { className: "muted" }, "–")),
      el("td", {}, u.streams.join(", ")), el("td", {}, subscriptions.join(", ")));
  }

  function workerRow(w) {
    const restart = el("button", {
      "data-action": "restart-worker", "data-worker": w.name,
      onclick: () => act(`Restart worker ${w.name}? Its sessions reconnect their streams.`,
        `/admin/api/workers/${encodeURIComponent(w.name)}/restart`, restart),
    }, "restart");
    const state = badge(w.state, String(w.state).toLowerCase());
    if (w.reason) state.title = w.reason;
    return el("tr", {}, el("td", {}, el("strong", {}, w.name), el("div", { className: "muted" }, w.kind)),
      el("td", {}, state), el("td", {}, w.pid ?? "–"), el("td", {}, w.port ?? "–"),
      el("td", {}, `${Object.keys(w.sessions || {}).length}${w.capacity ? ` / ${w.capacity}` : ""}`),
      el("td", {}, w.users ?? 0), el("td", {}, w.restarts ?? 0),
      el("td", {}, w.cpu_percent != null ? `${w.cpu_percent.toFixed(1)} %` : "–"), el("td", {}, mib(w.rss_bytes)),
      el("td", {}, restart));
  }

  function renderSummary(state) {
    const dropped = Object.values(state.stats.dataDropped || {}).reduce((a, b) => a + b, 0);
    const items = [["instance", short(state.id)], ["connections", state.connections],
      ["data frames in / out", `${state.stats.dataFramesIn} / ${state.stats.dataFramesOut}`],
      ["dropped", dropped], ["loop lag", `${(state.stats.eventLoopLagSeconds * 1000).toFixed(1)} ms`]];
    if (state.draining) items.push(["", badge("draining", "backoff")]);
    $("summary").replaceChildren(...items.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  }

  async function pollState() {
    const state = await api("/admin/api/state");
    if (instance !== state.id) {  // a restarted orchestrator numbers its log lines from 1 again
      instance = state.id;
      logSeq = 0;
      $("log").replaceChildren();
    }
    setStatus(true, "live");
    renderSummary(state);
    const sessionNames = Object.fromEntries(state.sessions.map((s) => [s.sessionId, s.sessionName]));
    renderTable("sessions", state.sessions, sessionRow);
    renderTable("users", state.users, (u) => userRow(u, sessionNames));
    renderTable("workers", state.workers, workerRow);
  }

  async function pollLogs() {
    const { lines } = await api(`/admin/api/logs?after=${logSeq}`);
    const log = $("log");
    for (const { seq, level, line } of lines) {
      log.append(el("span", { className: `level-${level}` }, `${line}\n`));
      logSeq = seq;
    }
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    if (lines.length && $("follow").checked) log.scrollTop = log.scrollHeight;
    return lines.length >= 500;  // a full answer: more are waiting
  }

  function every(poll) {
    const tick = async () => {
      let again = false;
      try {
        again = await poll();
      } catch (error) {
        setStatus(false, error.message);
      }
      setTimeout(tick, again ? 0 : POLL_MS);
    };
    tick();
  }

  every(pollState);
  every(pollLogs);
})();
