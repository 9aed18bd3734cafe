// Reports dashboard: asks for an API token (kept in sessionStorage), reads
// /api/v1/reports/trends and draws shares by code per period as SVG, one chart per valence,
// with the figures in a table below. No libraries, no network beyond this server.
(function () {
  "use strict";

  var TOKEN_KEY = "cit-report-token";
  var API = "/api/v1/reports";
  var VALENCES = ["satisfying", "dissatisfying"];
  var COLORS = ["#2f6fde", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207",
                "#be185d", "#4d7c0f", "#1d4ed8"];
  var POLL_MS = 60000;
  var SVG_NS = "http://www.w3.org/2000/svg";

  var els = {
    tokenForm: document.getElementById("token-form"),
    token: document.getElementById("token"),
    filters: document.getElementById("filters"),
    survey: document.getElementById("survey"),
    period: document.getElementById("period"),
    from: document.getElementById("from"),
    to: document.getElementById("to"),
    forget: document.getElementById("forget"),
    status: document.getElementById("status"),
    charts: document.getElementById("charts"),
    legend: document.getElementById("legend"),
    table: document.getElementById("table"),
    note: document.getElementById("note"),
    alertsPanel: document.getElementById("alerts-panel"),
    alerts: document.getElementById("alerts"),
    casesPanel: document.getElementById("cases-panel"),
    casesSummary: document.getElementById("cases-summary")
  };
  var pollTimer = null;

  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  // Signed in to the workbench: the session cookie authenticates, no token is needed.
  // A link from a survey's page opens its dashboard: /dashboard?survey_id=3
  var initialSurvey = new URLSearchParams(window.location.search).get("survey_id");
  var signedIn = document.getElementById("dashboard").getAttribute("data-signed-in") === "1";

  function say(text, isError) {
    els.status.textContent = text;
    els.status.className = "dash-status" + (isError ? " error" : "");
  }

  // cache: "no-cache" makes the browser revalidate with If-None-Match: a 304 costs no body.
  function getJSON(path) {
    var headers = { "Accept": "application/json" };
    if (token()) { headers.Authorization = "Bearer " + token(); }
    return fetch(path, {
      headers: headers,
      credentials: "same-origin",
      cache: "no-cache"
    }).then(function (response) {
      if (response.status === 401) {
        signedIn = false;
        sessionStorage.removeItem(TOKEN_KEY);
        showTokenForm();
        throw new Error("The token was not accepted: enter another one.");
      }
      if (!response.ok) {
        return response.json().catch(function () { return {}; }).then(function (problem) {
          throw new Error(problem.detail || ("Request failed (" + response.status + ")"));
        });
      }
      return response.json();
    });
  }

  function showTokenForm() {
    els.tokenForm.hidden = false;
    els.filters.hidden = true;
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  function start() {
    els.tokenForm.hidden = true;
    els.filters.hidden = false;
    getJSON(API + "/surveys").then(function (surveys) {
      var chosen = els.survey.value || initialSurvey || "";
      initialSurvey = null;
      els.survey.length = 1;
      surveys.forEach(function (s) {
        var option = document.createElement("option");
        option.value = String(s.id);
        option.textContent = s.title;
        els.survey.appendChild(option);
      });
      els.survey.value = chosen;
      if (chosen) { load(); }
    }).catch(function (error) { say(error.message, true); });
    load();
    if (!pollTimer) { pollTimer = setInterval(load, POLL_MS); }
  }

  function query() {
    var params = new URLSearchParams();
    params.set("period", els.period.value);
    if (els.survey.value) { params.set("survey_id", els.survey.value); }
    if (els.from.value) { params.set("from", els.from.value); }
    if (els.to.value) { params.set("to", els.to.value); }
    return params.toString();
  }

  // Fired alerts (any role; figures of suppressed cells come as null) and, for admins and
  // case managers, the case counts (asked only for those roles; others never see the panel).
  function pct(value) { return (value * 100).toFixed(1) + "%"; }

  function alertText(a) {
    var where = a.group_field ? " (" + a.group_field + ": " + a.group_value + ")" : "";
    var head = a.period_start + " · " + a.rule_name + ": " + a.code + where + ", " + a.valence;
    if (a.suppressed && a.share === null) { return head + " — " + a.reason + " (figures suppressed: small counts)"; }
    var text = head + " — " + a.reason + " to " + pct(a.share) + " (" + a.count + " of " + a.base + ")";
    if (a.previous_share !== null) { text += ", from " + pct(a.previous_share); }
    if (a.p_value !== null) { text += ", p=" + a.p_value.toFixed(3); }
    return text;
  }

  function loadAlerts() {
    var params = new URLSearchParams();
    if (els.survey.value) { params.set("survey_id", els.survey.value); }
    params.set("limit", "500");
    getJSON("/api/v1/alerts?" + params.toString()).then(function (page) {
      els.alerts.textContent = "";
      page.items.slice(-20).reverse().forEach(function (a) {
        var item = document.createElement("li");
        item.className = "dash-alert";
        item.setAttribute("data-reason", a.reason);
        item.textContent = alertText(a);
        els.alerts.appendChild(item);
      });
      if (!page.items.length) {
        var none = document.createElement("li");
        none.textContent = "No alert has fired.";
        els.alerts.appendChild(none);
      }
      els.alertsPanel.hidden = false;
    }).catch(function () { els.alertsPanel.hidden = true; });
    var cases = els.survey.value ? "?survey_id=" + els.survey.value : "";
    getJSON("/api/v1/tokens/me").then(function (me) {
      if (me.role !== "admin" && me.role !== "case_manager") { throw new Error("no cases"); }
      return getJSON("/api/v1/cases/summary" + cases);
    }).then(function (s) {
      var text = "Open " + s.open + " · contacted " + s.contacted + " · resolved " + s.resolved;
      if (s.median_hours_to_resolution !== null) {
        text += " · median time to resolution " + s.median_hours_to_resolution.toFixed(1) + " h";
      }
      els.casesSummary.textContent = text;
      els.casesPanel.hidden = false;
    }).catch(function () { els.casesPanel.hidden = true; });
  }

  var latestLoad = 0;  // a slow answer for an older filter (or poll) must not overwrite a newer one

  function load() {
    var mine = ++latestLoad;
    say("Loading…");
    loadAlerts();
    getJSON(API + "/trends?" + query()).then(function (report) {
      if (mine !== latestLoad) { return; }
      els.note.textContent = report.note;
      draw(report);
      fillTable(report);
      var periods = report.periods.length;
      say(periods ? periods + " periods, " + report.codes.length + " codes." :
        "No stories in this selection.");
    }).catch(function (error) { if (mine === latestLoad) { say(error.message, true); } });
  }

  function svg(name, attrs, parent) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function percent(value) { return value === null ? "suppressed" : (value * 100).toFixed(1) + "%"; }

  function colorOf(codes, code) { return COLORS[codes.indexOf(code) % COLORS.length]; }

  function draw(report) {
    els.charts.textContent = "";
    els.legend.textContent = "";
    var periods = report.periods.map(function (p) { return p.period; });
    var rowsByKey = {};  // ungrouped report: one row per period, code and valence
    report.rows.forEach(function (r) { rowsByKey[r.period + "|" + r.code + "|" + r.valence] = r; });
    var W = 480, H = 260, left = 46, right = 10, top = 12, bottom = 34;
    var plotW = W - left - right, plotH = H - top - bottom;
    // Periods without stories are absent from the report: place points by date, so that a
    // gap looks like a gap, and do not draw a line across it.
    var times = periods.map(function (p) { return Date.parse(p + "T00:00:00Z"); });
    var span = times.length > 1 ? times[times.length - 1] - times[0] : 0;
    var steps = times.slice(1).map(function (t, i) { return t - times[i]; }).sort(function (a, b) { return a - b; });
    var usualStep = steps.length ? steps[0] : 0;
    function x(i) { return left + (span ? (times[i] - times[0]) * plotW / span : plotW / 2); }
    function followsOn(i) { return i > 0 && times[i] - times[i - 1] <= usualStep * 1.6; }
    function y(share) { return top + plotH * (1 - share); }

    VALENCES.forEach(function (valence) {
      var figure = document.createElement("figure");
      figure.className = "dash-chart";
      var caption = document.createElement("figcaption");
      caption.textContent = valence === "satisfying" ? "Satisfying stories" : "Dissatisfying stories";
      figure.appendChild(caption);
      var chart = svg("svg", {
        viewBox: "0 0 " + W + " " + H, role: "img", "class": "chart",
        "data-valence": valence, "aria-label": "Share of " + valence + " stories by code"
      }, figure);
      [0, 0.25, 0.5, 0.75, 1].forEach(function (tick) {
        svg("line", { x1: left, x2: W - right, y1: y(tick), y2: y(tick), "class": "grid" }, chart);
        svg("text", { x: left - 6, y: y(tick) + 4, "class": "axis", "text-anchor": "end" }, chart)
          .textContent = Math.round(tick * 100) + "%";
      });
      var every = Math.max(1, Math.ceil(periods.length / 4));
      periods.forEach(function (period, i) {
        if (i % every !== 0 && i !== periods.length - 1) { return; }
        var anchor = periods.length > 1 && i === 0 ? "start" :
          (periods.length > 1 && i === periods.length - 1 ? "end" : "middle");
        svg("text", { x: x(i), y: H - bottom + 20, "class": "axis", "text-anchor": anchor }, chart)
          .textContent = period;
      });
      report.codes.forEach(function (code) {
        var series = svg("g", { "class": "series", "data-code": code, "data-valence": valence }, chart);
        var color = colorOf(report.codes, code);
        var segments = [], current = [];
        periods.forEach(function (period, i) {
          var row = rowsByKey[period + "|" + code + "|" + valence];
          if (!row || row.share === null) {  // suppressed or no base: a gap in the line
            if (current.length) { segments.push(current); current = []; }
            return;
          }
          if (current.length && !followsOn(i)) { segments.push(current); current = []; }
          current.push([x(i), y(row.share), row]);
        });
        if (current.length) { segments.push(current); }
        segments.forEach(function (points) {
          if (points.length > 1) {
            svg("polyline", {
              points: points.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" "),
              fill: "none", stroke: color, "stroke-width": 2
            }, series);
          }
          points.forEach(function (p) {
            var dot = svg("circle", { cx: p[0], cy: p[1], r: 3.5, fill: color, "class": "point" }, series);
            svg("title", {}, dot).textContent = code + ", " + p[2].period + ": " + percent(p[2].share) +
              " (" + p[2].count + " of " + p[2].base + ")";
          });
        });
      });
      els.charts.appendChild(figure);
    });

    report.codes.forEach(function (code) {
      var item = document.createElement("span");
      item.className = "dash-legend-item";
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colorOf(report.codes, code);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(code));
      els.legend.appendChild(item);
    });
  }

  function fillTable(report) {
    var body = els.table.tBodies[0];
    body.textContent = "";
    report.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = row.suppressed ? "suppressed" : "";
      var change = row.change_from_previous;
      var changeText = "";
      if (change && change.diff !== null) {
        changeText = (change.diff >= 0 ? "+" : "") + (change.diff * 100).toFixed(1) + " pts" +
          (change.p_value !== null ? " (p=" + change.p_value.toFixed(3) + ")" : "");
      }
      [row.period, row.code, row.valence,
       row.count === null ? "suppressed" : String(row.count),
       row.base === null ? "suppressed" : String(row.base),
       percent(row.share),
       row.ci_low === null ? "" : percent(row.ci_low) + " – " + percent(row.ci_high),
       changeText].forEach(function (text, i) {
        var td = document.createElement("td");
        td.textContent = text;
        if (i >= 3) { td.className = "num"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    els.table.hidden = report.rows.length === 0;
  }

  els.tokenForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var value = els.token.value.trim();
    if (!value) { return; }
    sessionStorage.setItem(TOKEN_KEY, value);
    els.token.value = "";
    start();
  });
  els.filters.addEventListener("submit", function (event) { event.preventDefault(); load(); });
  els.forget.addEventListener("click", function () {
    sessionStorage.removeItem(TOKEN_KEY);
    els.charts.textContent = "";
    els.legend.textContent = "";
    els.table.hidden = true;
    say("Token forgotten.");
    showTokenForm();
  });

  if (signedIn) { els.forget.hidden = true; }
  if (token() || signedIn) { start(); } else { showTokenForm(); }
})();
