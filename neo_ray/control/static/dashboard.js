// neo-ray dashboard: polls the documented HTTP routes every 2 s and updates the page in place.
// Elements are built once and only their text or attributes change, so nothing flickers; every
// value from the API goes in through textContent, never as HTML.
"use strict";
(() => {
  const EVERY_MS = 2000;
  const TOKEN_KEY = "neo-ray.admin-token";
  // Relative to the page, so the page works under a route prefix (a proxy, `serve run`) too.
  const ROOT = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  const INGESTION = "api/v1/ingestion";
  const FINAL = new Set(["complete", "failed", "skipped"]);
  const $ = (id) => document.getElementById(id);

  const known = new Map(); // worker_id → {card parts, last heartbeat}; absent from status = Offline
  const jobs = new Map(); // job_id → latest /jobs/{id} answer, for busy workers and the watched job
  let watched = null; // the job submitted from this tab
  let skewMs = 0; // server clock minus this tab's clock, from the Date header
  let lastOk = null;
  let historyKey = "";

  // ------------------------------------------------------------------ small DOM helpers

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function setAttr(el, name, value) {
    if (el.getAttribute(name) !== value) el.setAttribute(name, value);
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setBar(bar, fraction) {
    const pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
    setAttr(bar, "aria-valuenow", String(pct));
    const fill = bar.firstElementChild;
    if (fill.style.width !== pct + "%") fill.style.width = pct + "%";
  }

  function say(box, text, kind) {
    setText(box, text);
    setAttr(box, "data-kind", kind || "info");
  }

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, detail, retryAfter) {
      super(detail);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  function detailOf(body) {
    if (!body || body.detail === undefined) return "";
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail);
  }

  async function call(path, options = {}) {
    const headers = { Accept: "application/json" };
    if (options.token) headers.Authorization = "Bearer " + options.token;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10000);
    let resp;
    try {
      resp = await fetch(ROOT + path, {
        method: options.method || "GET",
        headers,
        signal: abort.signal,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      const why = err.name === "AbortError" ? "timed out" : "network error";
      throw new ApiError(0, "no answer from the API (" + why + ")", null);
    } finally {
      clearTimeout(timer);
    }
    const date = Date.parse(resp.headers.get("Date") || "");
    if (!Number.isNaN(date)) skewMs = date - Date.now();
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      const detail = detailOf(body) || resp.statusText || "error";
      throw new ApiError(resp.status, detail, resp.headers.get("Retry-After"));
    }
    return { status: resp.status, body };
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return String(err);
    const code = err.status ? " (" + err.status + ")" : "";
    if (err.status === 401) return "The admin token was refused" + code + ": " + err.message;
    if (err.status === 429) {
      const wait = err.retryAfter ? " Retry after " + err.retryAfter + " s." : "";
      return "The queue is full" + code + ": " + err.message + "." + wait;
    }
    if (err.status === 400) return "Not accepted" + code + ": " + err.message;
    if (err.status === 404) return "Not found" + code + ": " + err.message;
    if (err.status === 503) return "Unavailable" + code + ": " + err.message;
    return "Failed" + code + ": " + err.message;
  }

  // ------------------------------------------------------------------ formatting

  function ageText(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "unknown";
    const s = Math.max(0, (Date.now() + skewMs - t) / 1000);
    if (s < 60) return s.toFixed(0) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s ago";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
  }

  function seconds(x) {
    const v = Number(x) || 0;
    return v < 10 ? v.toFixed(2) + " s" : v < 600 ? v.toFixed(1) + " s" : (v / 60).toFixed(1) + " min";
  }

  function percent(x) {
    return (Math.round((Number(x) || 0) * 1000) / 10).toString() + " %";
  }

  function clock(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso || "";
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function kindOf(state) {
    const s = String(state || "");
    if (s.startsWith("Training Graph")) return "busy";
    if (s.startsWith("Error")) return "error";
    if (s === "Idle") return "idle";
    if (s === "Offline") return "offline";
    return "unknown";
  }

  const BADGE = { busy: "Training", error: "Error", idle: "Idle", offline: "Offline", unknown: "?" };

  function stageText(stage, progress, job) {
    let text = stage || "";
    if (job && job.stage === stage && job.total) text += " " + job.done + " / " + job.total;
    if (progress !== undefined && progress !== null) text += " · " + percent(progress);
    return text;
  }

  // A worker on a GPU may report {gpu: {name, utilization_percent, memory_used_mb,
  // memory_total_mb}} in its heartbeat; the card shows it when it is there.
  function gpuText(hb) {
    const g = hb.gpu;
    if (!g || typeof g !== "object") return "";
    const parts = [g.name || "GPU"];
    if (g.utilization_percent !== undefined) parts.push(g.utilization_percent + " % busy");
    if (g.memory_used_mb !== undefined && g.memory_total_mb !== undefined) {
      parts.push(Math.round(g.memory_used_mb) + " / " + Math.round(g.memory_total_mb) + " MB");
    }
    return parts.join(" · ");
  }

  // ------------------------------------------------------------------ workers

  function newCard(id) {
    const card = el("article", "card");
    const head = el("header");
    const badge = el("span", "badge");
    head.append(el("h3", "", id), badge);
    const stage = el("p", "small");
    const bar = el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-label", "progress of " + id);
    bar.append(el("span"));
    const list = el("dl");
    const field = (name) => {
      const dd = el("dd");
      list.append(el("dt", "", name), dd);
      return dd;
    };
    const parts = { card, badge, stage, bar, node: field("node"), device: field("device") };
    parts.gpuLabel = el("dt", "", "GPU");
    parts.gpu = el("dd");
    list.append(parts.gpuLabel, parts.gpu);
    parts.job = field("job");
    parts.beat = field("heartbeat");
    parts.err = el("p", "err");
    card.append(head, stage, bar, list, parts.err);
    return parts;
  }

  function updateCard(w, offline) {
    const hb = w.hb;
    const kind = offline ? "offline" : kindOf(hb.state);
    setAttr(w.card, "data-kind", kind);
    setAttr(w.badge, "data-kind", kind);
    setText(w.badge, BADGE[kind]);
    const busy = kind === "busy";
    const job = busy && hb.job_id ? jobs.get(hb.job_id) : null;
    w.stage.hidden = w.bar.hidden = !busy;
    if (busy) {
      // The job's own record is written as the stage moves, the heartbeat only every interval.
      const fresh = job && job.status === "running";
      const progress = fresh ? job.progress : hb.progress;
      setText(w.stage, stageText(fresh ? job.stage : hb.stage, progress, job));
      setBar(w.bar, progress);
    }
    setText(w.node, hb.node || "");
    setText(w.device, hb.device || "");
    const gpu = gpuText(hb);
    w.gpu.hidden = w.gpuLabel.hidden = !gpu;
    setText(w.gpu, gpu);
    setText(w.job, busy ? hb.state.replace(/^Training Graph on /, "") : "–");
    const age = ageText(hb.heartbeat_at);
    setText(w.beat, offline ? "Offline: last heartbeat " + age : age);
    w.err.hidden = kind !== "error";
    setText(w.err, kind === "error" ? hb.state : "");
  }

  function renderWorkers(body) {
    const live = new Set();
    let added = false;
    for (const hb of body.workers || []) {
      live.add(hb.worker_id);
      if (!known.has(hb.worker_id)) {
        known.set(hb.worker_id, newCard(hb.worker_id));
        added = true;
      }
      known.get(hb.worker_id).hb = hb;
    }
    if (added) {
      const ids = [...known.keys()].sort();
      $("workers").replaceChildren(...ids.map((id) => known.get(id).card));
    }
    for (const [id, w] of known) updateCard(w, !live.has(id));
    $("no-workers").hidden = known.size > 0;
    const overall = $("overall");
    setText(overall, body.status || "unknown");
    setAttr(overall, "title", body.status || "");
    setAttr(overall, "data-kind", kindOf(body.status));
  }

  function renderQueue(body) {
    setText($("q-size"), String(body.queue_size ?? "–"));
    setText($("q-processing"), String(body.processing ?? "–"));
    setText($("q-dead"), String(body.dead ?? "–"));
  }

  // ------------------------------------------------------------------ history

  function renderMetrics(m) {
    setText($("m-success"), percent(m.success_rate));
    setText($("m-error"), percent(m.error_rate));
    setText($("m-skip"), percent(m.skip_rate));
    setText($("m-duration"), seconds(m.average_duration_s));
    setText($("m-throughput"), (Number(m.throughput_per_hour) || 0) + " / h");
  }

  function noteOf(job) {
    if (job.status === "failed") return job.error || "failed";
    if (job.status === "skipped") return job.reason || "skipped";
    const bits = [];
    if (job.ref) bits.push("ref " + job.ref);
    if (job.commit_sha) bits.push(job.commit_sha.slice(0, 10));
    return bits.join(" · ");
  }

  const HEADINGS = [...document.querySelectorAll("#history thead th")].map((th) => th.textContent);

  function historyRow(job) {
    const tr = el("tr");
    const badge = el("span", "badge", job.status);
    badge.setAttribute("data-kind", job.status);
    const status = el("td");
    status.append(badge);
    tr.append(
      el("td", "when", clock(job.timestamp)),
      el("td", "repo", job.repo_url),
      status,
      el("td", "num", seconds(job.duration_seconds)),
      el("td", "num", String(job.files_processed ?? "")),
      el("td", "num", String(job.embeddings_generated ?? "")),
      el("td", "num", String(job.edges ?? "")),
      el("td", "note", noteOf(job)),
    );
    // Labels for the narrow layout, where each row is a block of labelled values.
    HEADINGS.forEach((label, i) => tr.cells[i].setAttribute("data-label", label));
    return tr;
  }

  function renderChart(list) {
    const svg = $("chart");
    const ns = "http://www.w3.org/2000/svg";
    const recent = list.slice(0, 20).reverse();
    const most = Math.max(0.001, ...recent.map((j) => Number(j.duration_seconds) || 0));
    const slot = 600 / 20;
    const bars = recent.map((job, i) => {
      const h = Math.max(2, ((Number(job.duration_seconds) || 0) / most) * 112);
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(i * slot + 3));
      rect.setAttribute("y", String(120 - h));
      rect.setAttribute("width", String(slot - 6));
      rect.setAttribute("height", String(h));
      rect.setAttribute("class", job.status);
      const title = document.createElementNS(ns, "title");
      title.textContent = job.repo_url + ": " + seconds(job.duration_seconds) + " (" + job.status + ")";
      rect.append(title);
      return rect;
    });
    svg.replaceChildren(...bars);
    const cap = recent.length
      ? "Durations of the last " + recent.length + " jobs, oldest on the left; longest " +
        seconds(most) + ". Green complete, red failed, amber skipped."
      : "Durations of recent jobs will show here.";
    setText($("chart-cap"), cap);
  }

  function renderHistory(body) {
    renderMetrics(body.metrics || {});
    const list = body.jobs || [];
    const key = list.map((j) => j.job_id + ":" + j.status).join(",");
    $("no-history").hidden = list.length > 0;
    $("chart-fig").hidden = list.length === 0;
    if (key === historyKey) return; // unchanged: leave the table and chart alone (no flicker)
    historyKey = key;
    $("history").tBodies[0].replaceChildren(...list.map(historyRow));
    renderChart(list);
  }

  // ------------------------------------------------------------------ the job submitted here

  function renderWatched() {
    const job = watched && jobs.get(watched.job_id);
    if (!job) return;
    const status = $("job-status");
    setText(status, job.status);
    setAttr(status, "data-kind", job.status);
    let line;
    if (job.status === "queued") line = "waiting in the queue";
    else if (job.status === "running") line = stageText(job.stage, job.progress, job);
    else if (job.status === "complete") {
      line = "complete in " + seconds(job.duration_seconds) + ": " + job.files_processed +
        " files, " + job.embeddings_generated + " vectors, " + job.edges + " edges";
    } else if (job.status === "failed") line = "failed: " + (job.error || "");
    else if (job.status === "skipped") line = "skipped: " + (job.reason || "");
    else line = job.status;
    setText($("job-stage"), line);
    setBar($("job-bar"), job.status === "complete" ? 1 : job.progress);
  }

  async function refreshJobs(status) {
    const ids = new Set();
    for (const hb of status ? status.workers || [] : []) {
      if (hb.job_id && kindOf(hb.state) === "busy") ids.add(hb.job_id);
    }
    const mine = watched && jobs.get(watched.job_id);
    if (watched && !(mine && FINAL.has(mine.status))) ids.add(watched.job_id);
    const answers = await Promise.allSettled(
      [...ids].map((id) => call(INGESTION + "/jobs/" + encodeURIComponent(id))),
    );
    [...ids].forEach((id, i) => {
      if (answers[i].status === "fulfilled") jobs.set(id, answers[i].value.body);
    });
    for (const id of [...jobs.keys()]) if (!ids.has(id) && id !== (watched && watched.job_id)) jobs.delete(id);
  }

  async function submit(event) {
    event.preventDefault();
    const url = $("f-url").value.trim();
    const ref = $("f-ref").value.trim();
    const token = $("f-token").value.trim();
    const box = $("submit-msg");
    if (!url) return say(box, "Enter a repository URL.", "error");
    if (!token) return say(box, "Enter the admin token.", "error");
    sessionStorage.setItem(TOKEN_KEY, token);
    const button = $("f-go");
    button.disabled = true;
    say(box, "Submitting…");
    try {
      const query = ref ? "?ref=" + encodeURIComponent(ref) : "";
      const path = INGESTION + "/ingest/" + encodeURIComponent(url) + query;
      const { status, body } = await call(path, { method: "POST", token });
      const text = status === 202
        ? "Queued " + body.repo_url + " as job " + body.job_id + ": position " +
          body.queue_position + " of " + body.queue_size + " (at most " + body.max_queue_size + ")."
        : body.repo_url + " is already job " + body.job_id + " (" + body.status + ").";
      say(box, text, "ok");
      watched = body;
      jobs.set(body.job_id, { job_id: body.job_id, status: body.status, progress: 0 });
      $("job").hidden = false;
      setText($("job-title"), "Job for " + body.repo_url + (body.ref ? " @ " + body.ref : ""));
      renderWatched();
    } catch (err) {
      say(box, describe(err) + (err.status === 401 ? ". Nothing was queued." : ""), "error");
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ search

  function evidenceText(ev) {
    if (!ev) return "";
    const bits = [];
    if (ev.graph_distance !== undefined && ev.graph_distance !== null) {
      bits.push("graph distance " + ev.graph_distance);
    } else bits.push("no graph path within reach");
    const shared = ev.shared_neighbors || [];
    const common = ev.common_imports || [];
    if (shared.length) bits.push("shared neighbours: " + shared.join(", "));
    if (common.length) bits.push("common imports: " + common.join(", "));
    return bits.join(" · ");
  }

  function renderSimilar(body, scope) {
    const items = (body.results || []).map((r) => {
      const li = el("li");
      const where = scope === "all" ? " (" + r.repo_url + ")" : "";
      li.append(el("code", "", r.file_path), document.createTextNode(where + " · score " +
        (Number(r.score) || 0).toFixed(3) + (r.language ? " · " + r.language : "")));
      li.append(el("div", "ev", evidenceText(r.evidence)));
      return li;
    });
    if (!items.length) items.push(el("li", "empty", "No similar file found."));
    $("similar").replaceChildren(...items);
  }

  function renderDependents(body) {
    const out = [];
    // by_depth: [{depth, count, files: [{file_path, language, depth, path}]}], nearest first;
    // a path runs from the queried file to this one.
    for (const group of body.by_depth || []) {
      out.push(el("h4", "", "depth " + group.depth + " (" + group.count + ")"));
      const ul = el("ul", "list");
      for (const f of group.files || []) {
        const li = el("li");
        li.append(el("code", "", f.file_path));
        if (f.path && f.path.length > 2) li.append(el("div", "ev", "path " + f.path.join(" → ")));
        ul.append(li);
      }
      out.push(ul);
    }
    if (!out.length) out.push(el("p", "empty", "No file depends on it within depth " + body.depth + "."));
    $("dependents").replaceChildren(...out);
  }

  async function search(event) {
    event.preventDefault();
    const box = $("search-msg");
    const token = $("f-token").value.trim() || sessionStorage.getItem(TOKEN_KEY) || "";
    const repo = $("s-repo").value.trim();
    const file = $("s-file").value.trim();
    if (!repo || !file) return say(box, "Enter a repository URL and a file path.", "error");
    if (!token) return say(box, "Search needs the admin token: enter it in the submit form above.", "error");
    const scope = $("s-scope").value;
    const similar = new URLSearchParams({ repo_url: repo, file_path: file, limit: "10", scope });
    if ($("s-mode").value) similar.set("mode", $("s-mode").value);
    const deps = new URLSearchParams({ repo_url: repo, file_path: file, depth: $("s-depth").value || "1" });
    $("s-go").disabled = true;
    say(box, "Searching…");
    const [near, dependents] = await Promise.allSettled([
      call("api/v1/search/similar?" + similar, { token }),
      call("api/v1/graph/dependents?" + deps, { token }),
    ]);
    $("s-go").disabled = false;
    $("results").hidden = false;
    const errors = [near, dependents].filter((r) => r.status === "rejected").map((r) => describe(r.reason));
    if (near.status === "fulfilled") renderSimilar(near.value.body, scope);
    else $("similar").replaceChildren();
    if (dependents.status === "fulfilled") renderDependents(dependents.value.body);
    else $("dependents").replaceChildren();
    say(box, errors.length ? errors.join(" ") : "Results for " + file + ".", errors.length ? "error" : "ok");
  }

  // ------------------------------------------------------------------ the 2-second loop

  function connection(ok, err) {
    // The status is a live region: it changes only when the connection does, so a screen
    // reader is not told the time every 2 s; the time sits beside it.
    const box = $("conn");
    if (ok) {
      lastOk = new Date();
      say(box, "live", "up");
      setText($("updated"), "· updated " + lastOk.toLocaleTimeString());
      return;
    }
    setText($("updated"), "");
    const since = lastOk ? "; showing what it said at " + lastOk.toLocaleTimeString() : "";
    if (!lastOk) {
      setText($("overall"), "status unknown");
      setAttr($("overall"), "data-kind", "unknown");
    }
    say(box, "API unavailable: " + describe(err) + " · retrying every 2 s" + since, "down");
  }

  async function tick() {
    try {
      if (document.hidden) return; // a background tab asks nothing; it catches up when shown
      const [status, history] = await Promise.allSettled([
        call(INGESTION + "/worker/status"),
        call(INGESTION + "/jobs/history?limit=20"),
      ]);
      const body = status.status === "fulfilled" ? status.value.body : null;
      await refreshJobs(body);
      if (body) {
        renderWorkers(body);
        renderQueue(body);
      }
      if (history.status === "fulfilled") renderHistory(history.value.body);
      renderWatched();
      const failed = [status, history].find((r) => r.status === "rejected");
      connection(!failed, failed && failed.reason);
    } catch (err) {
      connection(false, err);
    } finally {
      setTimeout(tick, EVERY_MS);
    }
  }

  function start() {
    $("f-token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("submit-form").addEventListener("submit", submit);
    $("search-form").addEventListener("submit", search);
    $("f-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("f-token").value = "";
      say($("submit-msg"), "Token forgotten.");
    });
    tick();
  }

  start();
})();
