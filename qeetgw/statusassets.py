"""
The status page's files, served by the metrics listener as they are here:
the HTML (C{/status}), its script (C{/status.js}) and its style sheet
(C{/status.css}).

Why separate files and no inline script or style: the page is served with
the gateway's own Content-Security-Policy (C{script-src 'self';
script-src-attr 'none'}), which forbids inline scripts and event-handler
attributes; a same-origin script file is what it allows.  Nothing is
loaded from elsewhere (no font, no library), and the script writes every
value with C{textContent} (never C{innerHTML}), so nothing a service or an
upstream says can become markup.

They are Python strings rather than package data files so that every way
of installing qeetgw ships them, with nothing to declare.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>qeetgw status</title>
<link rel="stylesheet" href="status.css">
<script src="status.js" defer></script>
</head>
<body>
<header>
<h1>qeetgw status</h1>
<p id="updated" class="stale">loading&hellip;</p>
</header>
<noscript><p>This page needs JavaScript; its data is at <a href="status.json">status.json</a>.</p></noscript>
<section>
<h2>Gateway</h2>
<dl id="gateway"></dl>
</section>
<section>
<h2>Routes</h2>
<table id="routes">
<thead><tr><th>client prefix</th><th>service</th><th>upstream prefix</th></tr></thead>
<tbody></tbody>
</table>
</section>
<section>
<h2>Services</h2>
<p class="note">Traffic over the last <span id="window">60</span> s: tries per second,
5xx per second (5xx answers and failed tries: refused, reset, timed out),
latency percentiles from send to the end of the response.</p>
<table id="services">
<thead><tr>
<th>service / instance</th><th>state</th><th>reason</th><th>last check</th><th>check</th>
<th>in flight</th><th>req/s</th><th>5xx/s</th><th>p50</th><th>p99</th>
</tr></thead>
</table>
</section>
</body>
</html>
"""

STYLE = """:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em;
  color: #1d232a; background: #fafbfc; font-size: 14px; }
h1 { font-size: 1.5em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 1.4em 0 .5em; }
header p { margin: 0; color: #57606a; }
header p.stale { color: #b35900; }
dl#gateway { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1.2em; margin: 0; }
dl#gateway dt { color: #57606a; }
dl#gateway dd { margin: 0; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e1e4e8; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.service td { background: #f6f8fa; font-weight: 600; border-top: 2px solid #d0d7de; }
tr.instance td:first-child { padding-left: 1.8em; font-family: ui-monospace, monospace; font-weight: normal; }
td.reason { color: #57606a; max-width: 28em; }
.note { color: #57606a; margin: 0 0 .5em; }
.state { display: inline-block; padding: .05em .55em; border-radius: 1em; font-size: .9em;
  font-weight: 600; white-space: nowrap; color: #fff; background: #6e7781; }
.state-healthy { background: #1a7f37; }
.state-unknown { background: #6e7781; }
.state-unhealthy { background: #cf222e; }
.state-ejected { background: #bc4c00; }
.state-draining { background: #0969da; }
"""

SCRIPT = r"""// The status page: polls status.json and redraws the tables.  Every value
// goes in with textContent (never innerHTML): nothing the data holds can
// become markup.  Served as a file of its own because the gateway's
// Content-Security-Policy (script-src 'self') refuses inline scripts.
"use strict";
(function () {
  const REFRESH_MS = 1000;
  const STATES = ["unknown", "healthy", "unhealthy", "ejected", "draining"];
  let lastGood = null;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function dash(value, unit) {
    return value === null || value === undefined ? "\u2013" : String(value) + (unit || "");
  }

  function clock(iso) {
    const date = new Date(iso);
    return isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString();
  }

  function ago(iso, nowIso) {
    if (!iso) return "never";
    const seconds = (Date.parse(nowIso) - Date.parse(iso)) / 1000;
    if (!isFinite(seconds)) return String(iso);
    return clock(iso) + " (" + Math.max(0, seconds).toFixed(1) + " s ago)";
  }

  function duration(seconds) {
    let left = Math.floor(seconds);
    const days = Math.floor(left / 86400); left -= days * 86400;
    const hours = Math.floor(left / 3600); left -= hours * 3600;
    const minutes = Math.floor(left / 60); left -= minutes * 60;
    const parts = [];
    if (days) parts.push(days + " d");
    if (days || hours) parts.push(hours + " h");
    if (days || hours || minutes) parts.push(minutes + " min");
    parts.push(left + " s");
    return parts.join(" ");
  }

  function badge(state, label) {
    const known = STATES.indexOf(state) >= 0 ? state : "unknown";
    const node = el("span", label || state, "state state-" + known);
    node.setAttribute("data-state", String(state));
    return node;
  }

  function cell(row, value, className) {
    const td = el("td", value, className);
    row.appendChild(td);
    return td;
  }

  function drawGateway(gateway) {
    const list = document.getElementById("gateway");
    const items = [
      ["version", gateway.version],
      ["uptime", duration(gateway.uptimeSeconds) + " (since " + gateway.startedAt + ")"],
      ["readiness", gateway.readiness],
      ["open connections", gateway.connections],
      ["open tunnels", gateway.tunnels],
      ["rate-limit store", gateway.rateLimit.store + ": " + gateway.rateLimit.status +
        (gateway.rateLimit.detail ? " (" + gateway.rateLimit.detail + ")" : "")],
      ["health checks", gateway.healthCheckIntervalMs > 0
        ? "every " + gateway.healthCheckIntervalMs + " ms" : "off"],
    ];
    if (gateway.workers !== null && gateway.workers !== undefined) {
      items.push(["workers", gateway.workers + " of " + gateway.workersConfigured +
        " reporting (states per worker in the reason when they differ)"]);
    }
    const nodes = [];
    for (const [name, value] of items) {
      nodes.push(el("dt", name));
      const dd = el("dd");
      if (name === "readiness") {
        dd.appendChild(badge(value === "ready" ? "healthy" : "unhealthy", value));
      } else {
        dd.textContent = String(value);
      }
      nodes.push(dd);
    }
    list.replaceChildren(...nodes);
    document.getElementById("window").textContent = String(gateway.windowSeconds);
  }

  function drawRoutes(routes) {
    const body = document.querySelector("#routes tbody");
    body.replaceChildren(...routes.map((route) => {
      const row = el("tr");
      cell(row, route.prefix);
      cell(row, route.service);
      cell(row, route.upstreamPrefix);
      return row;
    }));
  }

  function traffic(row, item) {
    cell(row, dash(item.inFlight), "num");
    cell(row, dash(item.requestsPerSecond), "num");
    cell(row, dash(item.errorsPerSecond), "num");
    cell(row, dash(item.p50Ms, " ms"), "num");
    cell(row, dash(item.p99Ms, " ms"), "num");
  }

  function stateLabel(instance) {
    if (instance.state === "ejected" && instance.ejectedUntil) {
      return "ejected until " + clock(instance.ejectedUntil);
    }
    return instance.state;
  }

  function drawServices(services, nowIso) {
    const table = document.getElementById("services");
    const bodies = services.map((service) => {
      const body = el("tbody");
      body.setAttribute("data-service", service.name);
      const head = el("tr", null, "service");
      cell(head, service.name);
      cell(head, "").appendChild(badge(service.state));
      cell(head, service.reason || "", "reason");
      cell(head, "");
      cell(head, "");
      traffic(head, service);
      body.appendChild(head);
      for (const instance of service.instances) {
        const row = el("tr", null, "instance");
        row.setAttribute("data-url", instance.url);
        row.setAttribute("data-state", instance.state);
        cell(row, instance.url);
        cell(row, "").appendChild(badge(instance.state, stateLabel(instance)));
        cell(row, instance.reason || "", "reason");
        cell(row, ago(instance.lastCheck, nowIso));
        cell(row, dash(instance.checkLatencyMs, " ms"), "num");
        traffic(row, instance);
        body.appendChild(row);
      }
      return body;
    });
    const head = table.querySelector("thead");
    table.replaceChildren(head, ...bodies);
  }

  function draw(report) {
    drawGateway(report.gateway);
    drawRoutes(report.routes);
    drawServices(report.services, report.timestamp);
    const updated = document.getElementById("updated");
    updated.textContent = "updated " + clock(report.timestamp) + ", every " + REFRESH_MS / 1000 + " s";
    updated.className = "";
    document.body.setAttribute("data-updated", report.timestamp);
  }

  function failed(reason) {
    const updated = document.getElementById("updated");
    updated.textContent = "update failed (" + reason + ")" +
      (lastGood ? "; showing the data of " + clock(lastGood) : "");
    updated.className = "stale";
  }

  async function poll() {
    try {
      const response = await fetch("status.json", { cache: "no-store" });
      if (!response.ok) {
        let message = "HTTP " + response.status;
        try {
          const body = await response.json();
          if (body && body.error && body.error.message) message += ": " + body.error.message;
        } catch (ignored) { /* not JSON */ }
        failed(message);
      } else {
        const report = await response.json();
        draw(report);
        lastGood = report.timestamp;
      }
    } catch (error) {
      failed(String(error && error.message ? error.message : error));
    }
    setTimeout(poll, REFRESH_MS);
  }

  poll();
})();
"""
