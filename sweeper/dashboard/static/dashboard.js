// The page of `sweeper dashboard` and `sweeper report`: renders the views that
// sweeper/dashboard/views.py builds (JSON holding Plotly figures) with plotly.js.
//
// Two modes, one code path:
// - live (served by sweeper/dashboard/server.py): fetches api/*, then polls every POLL_MS and
//   redraws in place (Plotly.react) when the sweep changed; nothing reloads the page;
// - report (window.SWEEPER_REPORT set by sweeper/report.py): the same payloads are embedded in
//   the file, no request is ever made.
// Routes live in the hash (#/trial/N), so both work from http:// and file:// alike.
// Every text from the sweep goes through textContent, never innerHTML.
"use strict";
(function () {
  const REPORT = window.SWEEPER_REPORT || null;
  const POLL_MS = 2000;
  const TOP_CHOICES = [1, 3, 5, 10, 20];
  const PLOT_CONFIG = { responsive: true, displaylogo: false };
  const state = {
    top: REPORT ? Math.min(5, REPORT.overview.top) : 5, // the report holds more: the choice shows them
    overviewVersion: null,
    importanceVersion: null,
    trial: null,
    trialVersion: null,
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.entries(props || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v;
      else if (k === "cls") node.className = v;
      else node.setAttribute(k, v);
    });
    (children || []).forEach((c) => node.appendChild(typeof c === "string" ? document.createTextNode(c) : c));
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function num(v) {
    if (v === null || v === undefined) return "–";
    const n = Number(v);
    if (!Number.isFinite(n)) return String(v);
    return Number(n.toPrecision(4)).toString();
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 90) return s + " s";
    const m = Math.round(s / 60);
    if (m < 90) return m + " min";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function intervalText(iv) {
    if (!iv) return "";
    if (iv[2] === "95% CI") return " [" + num(iv[0]) + ", " + num(iv[1]) + "] 95% CI";
    return " ± " + num((iv[1] - iv[0]) / 2) + " (std over seeds)";
  }

  function showError(err) {
    const box = $("error");
    if (!err) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.textContent = "could not refresh: " + (err.message || err);
  }

  async function getJSON(path) {
    const resp = await fetch(path, { cache: "no-store" });
    if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
    return resp.json();
  }

  // Plots are drawn when they come near the viewport (and redrawn only when their figure
  // changed): a first view draws what it shows, and a hidden or far-down plot -- parallel
  // coordinates take seconds in a browser without GPU -- costs nothing until looked at.
  const pending = new Map(); // div -> figure not drawn yet
  const nearby = new Set(); // divs within the margin of the viewport
  const drawnAs = new WeakMap(); // div -> JSON of the figure it was last given
  const observer = new IntersectionObserver(
    (entries) => {
      entries.forEach((e) => {
        if (e.isIntersecting) nearby.add(e.target);
        else nearby.delete(e.target);
        if (e.isIntersecting && pending.has(e.target)) draw(e.target);
      });
    },
    { rootMargin: "400px 0px" }
  );

  function draw(div) {
    const fig = pending.get(div);
    pending.delete(div);
    Plotly.react(div, fig.data, fig.layout, PLOT_CONFIG);
    if (div.dataset.clickable) linkToTrials(div);
  }

  function plot(div, fig) {
    const key = JSON.stringify(fig);
    if (drawnAs.get(div) === key) return; // unchanged since last time
    drawnAs.set(div, key);
    pending.set(div, fig);
    observer.observe(div);
    if (nearby.has(div)) draw(div);
  }

  function unplot(div) {
    pending.delete(div);
    observer.unobserve(div);
    nearby.delete(div);
    drawnAs.delete(div);
    Plotly.purge(div);
  }

  // Clicking a point or a heatmap cell whose customdata is a trial id opens that trial.
  function linkToTrials(div) {
    if (div.dataset.linked) return;
    div.dataset.linked = "1";
    div.on("plotly_click", (ev) => {
      const t = ev.points && ev.points[0] ? ev.points[0].customdata : null;
      if (Number.isInteger(t) && t >= 0) location.hash = "#/trial/" + t;
    });
  }

  // A table of rows of texts (or of what rowNode makes of each row); no header without columns.
  function table(columns, rows, rowNode) {
    const body = rows.map((r, i) => (rowNode ? rowNode(r, i) : el("tr", {}, r.map((c) => el("td", { text: c })))));
    const parts = columns ? [el("thead", {}, [el("tr", {}, columns.map((c) => el("th", { text: c })))])] : [];
    return el("table", {}, parts.concat([el("tbody", {}, body)]));
  }

  function trialLink(trial, text) {
    return el("a", { href: "#/trial/" + trial, text: text === undefined ? String(trial) : text });
  }

  // ------------------------------------------------------------------ the sweep

  function renderSweep(info) {
    document.title = "sweeper: " + info.name;
    $("sweep-name").textContent = info.name;
    $("sweep-uri").textContent = info.uri;
    $("sweep-description").textContent = info.description || "";
    $("objective").textContent = info.objective;
    $("recipe").textContent = info.recipe || "";
    $("mode").textContent = REPORT ? "report written " + REPORT.written_at : "live";
  }

  function renderProgress(p) {
    $("state").textContent = p.state;
    $("state").className = "badge state-" + String(p.state).replace(/\W/g, "");
    $("done-count").textContent = p.finished + "/" + (p.total === null ? "?" : p.total);
    const bar = $("done-bar");
    bar.value = p.done_fraction === null ? 0 : p.done_fraction;
    const counts = clear($("counts"));
    Object.entries(p.counts).forEach(([k, v]) => {
      if (v) counts.appendChild(el("span", { cls: "count state-" + k, text: k + " " + v }));
    });
    if (p.pending) counts.appendChild(el("span", { cls: "count", text: p.pending + " jobs queued" }));
    $("eta").textContent = p.eta_s === null ? "–" : duration(p.eta_s);
    $("updated").textContent = p.updated_at || "–";
    const best = clear($("best"));
    if (p.best) {
      best.appendChild(trialLink(p.best.trial, "trial " + p.best.trial));
      best.appendChild(document.createTextNode(": " + num(p.best.value) + intervalText(p.best.interval)));
      const params = Object.entries(p.best.params).map(([k, v]) => k + "=" + v).join(", ");
      best.appendChild(el("span", { cls: "params", text: "  " + params }));
      if (!p.best.feasible) best.appendChild(el("span", { cls: "warn", text: " (no trial meets the constraints)" }));
    } else {
      best.textContent = "none yet";
    }
    const jobs = clear($("running"));
    if (p.running.length) {
      const rows = p.running.map((j) => {
        const bar = el("progress", { max: String(j.steps || 1) });
        bar.value = j.step;
        return el("tr", {}, [
          el("td", {}, [trialLink(j.trial)]),
          el("td", { text: String(j.seed) }),
          el("td", { text: String(j.attempt) }),
          el("td", { text: j.step + "/" + j.steps }),
          el("td", {}, [bar]),
          el("td", { text: j.worker }),
        ]);
      });
      jobs.appendChild(table(["trial", "seed", "attempt", "step", "progress", "worker"], p.running, (_, i) => rows[i]));
    }
  }

  function renderRanking(r) {
    const box = clear($("ranking"));
    const rowNode = (row) =>
      el(
        "tr",
        { cls: "state-" + row.state },
        row.cells.map((c, i) => (i === 1 ? el("td", {}, [trialLink(row.trial, c)]) : el("td", { text: c })))
      );
    box.appendChild(table(r.columns, r.rows, rowNode));
  }

  // One plot per figure, kept across refreshes (keyed by name) so Plotly.react updates in place.
  function renderFigureGrid(container, items, after) {
    const wanted = new Set(items.map((it) => it.metric));
    Array.from(container.children).forEach((div) => {
      if (!wanted.has(div.dataset.metric)) {
        unplot(div);
        container.removeChild(div);
      }
    });
    items.forEach((it, i) => {
      let div = container.querySelector('[data-metric="' + CSS.escape(it.metric) + '"]');
      if (!div) {
        div = el("div", { cls: "plot", "data-metric": it.metric });
      }
      if (container.children[i] !== div) container.insertBefore(div, container.children[i] || null);
      plot(div, it.figure);
      if (after) after(div);
    });
  }

  // The report holds the curves of its best N trials; the top-K choice shows the first K.
  function applyTop(div) {
    const fig = pending.get(div) || (div.data ? { data: div.data } : null);
    if (!fig) return;
    const visible = fig.data.map((t) => (t.meta && t.meta.rank ? t.meta.rank <= state.top : true));
    if (pending.has(div)) fig.data.forEach((t, i) => (t.visible = visible[i]));
    else Plotly.restyle(div, { visible: visible });
  }

  function renderTopChoices(maxTop) {
    const sel = $("top");
    if (sel.options.length) return;
    TOP_CHOICES.filter((k) => !REPORT || k <= maxTop).forEach((k) => sel.appendChild(el("option", { value: String(k), text: String(k) })));
    if (REPORT && !TOP_CHOICES.includes(maxTop)) sel.appendChild(el("option", { value: String(maxTop), text: String(maxTop) }));
    sel.value = String(state.top);
    sel.addEventListener("change", () => {
      state.top = Number(sel.value);
      if (REPORT) Array.from($("curves").children).forEach(applyTop);
      else refresh(true);
    });
  }

  function renderSingle(id, fig, emptyText) {
    const div = $(id);
    if (!fig) {
      unplot(div);
      div.textContent = emptyText;
      div.classList.add("empty");
      return;
    }
    if (div.classList.contains("empty")) {
      div.textContent = "";
      div.classList.remove("empty");
    }
    div.dataset.clickable = "1";
    plot(div, fig);
  }

  // Top of the page first: the ranking (a row per trial, thousands in a big sweep) last.
  function renderOverview(o) {
    renderProgress(o.progress);
    renderTopChoices(o.top);
    $("curve-trials").textContent = o.curve_trials.length ? o.curve_trials.join(" · ") : "no trial has traces yet";
    renderFigureGrid($("curves"), o.curves, REPORT ? applyTop : null);
    renderSingle("fig-pareto", o.pareto, "no final pass@k and entropy yet");
    renderSingle("fig-space", o.space ? o.space.figure : null, "no trial has a value yet");
    $("space-kind").textContent = o.space ? "(" + o.space.kind + ")" : "";
    renderRanking(o.ranking);
  }

  function renderImportance(imp) {
    renderSingle("fig-importance", imp.figure, "parameter importance: " + imp.message);
  }

  // ------------------------------------------------------------------ a trial

  function renderTrial(t) {
    $("trial-title").textContent = "trial " + t.trial;
    const facts = [
      ["state", t.state + (t.feasible ? "" : " (infeasible)")],
      ["rank", t.rank === null ? "–" : String(t.rank)],
      [t.objective, num(t.value) + intervalText(t.interval)],
      ["seeds with a value", String(t.n_seeds)],
      ["final entropy", num(t.final_entropy)],
    ];
    Object.entries(t.params).forEach(([k, v]) => facts.push([k, v]));
    if (t.running.length) facts.push(["running", t.running.map((j) => "seed " + j.seed + " at step " + j.step).join(", ")]);
    if (t.error) facts.push(["error", t.error]);
    const box = clear($("trial-facts"));
    box.appendChild(table(null, facts, (r) => el("tr", {}, [el("th", { text: r[0] }), el("td", { text: r[1] })])));
    clear($("trial-attempts")).appendChild(table(t.attempts.columns, t.attempts.rows));
    renderFigureGrid($("trial-curves"), t.curves);
    const samples = clear($("trial-samples"));
    if (t.samples.total) {
      samples.appendChild(el("p", { text: "showing " + t.samples.rows.length + " of " + t.samples.total + " samples, latest step first" }));
      samples.appendChild(table(t.samples.columns, t.samples.rows));
    } else {
      samples.textContent = "no eval samples logged for this trial";
    }
  }

  // ------------------------------------------------------------------ data and routing

  async function refreshOverview(force) {
    if (REPORT) {
      renderOverview(REPORT.overview);
      renderImportance(REPORT.importance);
      return;
    }
    const since = force ? "" : "&since=" + encodeURIComponent(state.overviewVersion || "");
    const o = await getJSON("api/overview?top=" + state.top + since);
    if (o.unchanged) return;
    renderOverview(o);
    state.overviewVersion = o.version;
    if (o.version !== state.importanceVersion) {
      const imp = await getJSON("api/importance");
      renderImportance(imp);
      state.importanceVersion = imp.version;
    }
  }

  async function refreshTrial() {
    const n = state.trial;
    if (REPORT) {
      const t = REPORT.trials[String(n)];
      if (t) renderTrial(t);
      else {
        $("trial-title").textContent = "trial " + n;
        clear($("trial-facts")).appendChild(
          el("p", { text: "This report holds pages for " + Object.keys(REPORT.trials).length + " trials; `sweeper dashboard` shows every trial." })
        );
        ["trial-attempts", "trial-samples"].forEach((id) => clear($(id)));
        renderFigureGrid($("trial-curves"), []);
      }
      return;
    }
    const t = await getJSON("api/trial/" + n);
    if (t.version === state.trialVersion && n === state.trial) return;
    if (n !== state.trial) return; // navigated away meanwhile
    renderTrial(t);
    state.trialVersion = t.version;
  }

  async function refresh(force) {
    if (state.busy) return;
    state.busy = true;
    try {
      if (state.trial === null) await refreshOverview(force);
      else await refreshTrial();
      showError(null);
    } catch (err) {
      showError(err);
    } finally {
      state.busy = false;
    }
  }

  function route() {
    const m = location.hash.match(/^#\/trial\/(\d+)$/);
    const trial = m ? Number(m[1]) : null;
    $("overview").hidden = trial !== null;
    $("trial-view").hidden = trial === null;
    if (trial !== null && trial !== state.trial) {
      // Another trial: nothing of the previous one stays on screen while this one loads.
      state.trialVersion = null;
      $("trial-title").textContent = "trial " + trial;
      ["trial-facts", "trial-attempts", "trial-samples"].forEach((id) => clear($(id)));
      renderFigureGrid($("trial-curves"), []);
    }
    state.trial = trial;
    window.scrollTo(0, 0);
    refresh(true).then(() => {
      // Plots drawn before a resize of the window while hidden: size them to what shows now.
      document.querySelectorAll(trial === null ? "#overview .js-plotly-plot" : "#trial-view .js-plotly-plot").forEach((d) => Plotly.Plots.resize(d));
    });
  }

  async function start() {
    // The sweep's name and the first view are asked for at once.
    const info = REPORT ? Promise.resolve(REPORT.sweep) : getJSON("api/sweep");
    window.addEventListener("hashchange", route);
    route();
    try {
      renderSweep(await info);
    } catch (err) {
      showError(err);
    }
    if (!REPORT) {
      setInterval(() => {
        if (!document.hidden) refresh(false);
      }, POLL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
