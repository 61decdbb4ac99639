// kmigrate status page: polls GET /v1/status every 2 s. With an admin token,
// open the page as http://ADMIN/#token=TOKEN (the fragment never leaves the
// browser) or type it in; it is kept in sessionStorage.
"use strict";

const tokenKey = "kmigrate-admin-token";
(function takeTokenFromFragment() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(tokenKey, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", "none", "muted");
    td.colSpan = document.querySelectorAll("#" + id + " th").length;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
    body.append(tr);
  }
}

function num(v) { return el("td", v === null || v === undefined ? "–" : v.toLocaleString("en-US"), "num"); }

function phaseCell(phase) {
  const td = el("td");
  const kind = phase === "source" ? "source" : phase === "target" ? "target" : "moving";
  td.append(el("span", phase, "phase phase-" + kind));
  return td;
}

function ago(t) {
  const d = (Date.now() - Date.parse(t)) / 1000;
  if (!isFinite(d) || d < 0 || Date.parse(t) <= 0) return "–";
  if (d < 60) return Math.round(d) + " s ago";
  if (d < 3600) return Math.round(d / 60) + " min ago";
  return new Date(t).toLocaleString();
}

function render(s) {
  const moving = s.groups.filter(g => g.phase !== "source" && g.phase !== "target").length;
  const lag = s.topics.reduce((n, t) => n + t.lag_records, 0);
  document.getElementById("summary").textContent =
    `node ${s.node} · leader ${s.leader || "none"} · ${s.topics.length} topics · lag ${lag.toLocaleString("en-US")} records · ` +
    `${s.groups.length} groups${moving ? ` (${moving} moving)` : ""}`;
  document.getElementById("updated").textContent = "updated " + new Date(s.time).toLocaleTimeString();

  fill("clusters", [
    ["source", s.clusters.source.join(", ")],
    ["target", s.clusters.target.length ? s.clusters.target.join(", ") : "none (pass-through)"],
  ]);
  fill("nodes", s.nodes.map(n => [
    n.id + (n.id === s.node ? " (this node)" : ""), n.address || "–",
    (n.leader ? "leader" : n.voter ? "voter" : "non-voter") + (n.writer ? ", writer" : ""),
    num(n.applied_index), el("td", n.live ? "live" : "dead", n.live ? "good" : "bad"),
  ]));
  fill("topics", s.topics.map(t => {
    const writers = [...new Set(t.partitions.map(p => p.writer || "unassigned"))].join(", ");
    return [t.topic, t.producers, num(t.partitions.length), num(t.lag_records), num(t.lag_ms), writers];
  }));
  fill("groups", s.groups.map(g => [
    g.group, phaseCell(g.phase), num(g.epoch), ago(g.changed_at),
    el("td", g.complete ? "yes" : "not yet", g.complete ? "good" : "bad"),
  ]));
  fill("flips", s.flips.map(f => [
    ago(f.started_at), f.group ? "group " + f.group : "topic " + f.topic, `${f.verb}: ${f.from} → ${f.to}`,
    el("td", f.error ? "failed: " + f.error : f.already_done ? "already there" : f.phase, f.error ? "bad" : "good"),
    f.took_ms + " ms", f.group ? `${f.rejoined}/${f.members} rejoined` : `produces held ${f.drain_ms} ms`,
  ]));
}

async function poll() {
  const headers = {};
  const token = sessionStorage.getItem(tokenKey);
  if (token) headers["Authorization"] = "Bearer " + token;
  const err = document.getElementById("error");
  try {
    const r = await fetch("/v1/status", { headers, cache: "no-store" });
    if (r.status === 401) {
      document.getElementById("login").hidden = false;
      err.textContent = token ? "the node refused this token" : "this node requires an admin token";
      err.hidden = false;
      return;
    }
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    render(await r.json());
    document.getElementById("login").hidden = true;
    err.hidden = true;
  } catch (e) {
    err.textContent = "cannot read /v1/status: " + e.message;
    err.hidden = false;
  }
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem(tokenKey, document.getElementById("token").value);
  poll();
});

poll();
setInterval(poll, 2000);
