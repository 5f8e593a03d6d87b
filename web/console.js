// The RangeDB console: renders /api/v1/cluster and /api/v1/backups (the same
// documents `rangedb admin cluster status --output json` and `rangedb admin
// backup list --output json` print) and refreshes them every REFRESH_MS.
"use strict";

const REFRESH_MS = 2000;
const STATUS = {
  NODE_RUNNING: ["live", "ok"],
  NODE_DRAINING: ["draining", "warn"],
  NODE_DECOMMISSIONING: ["decommissioning", "warn"],
  NODE_UNREACHABLE: ["dead", "bad"],
};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  tbody.appendChild(tr);
  return tr;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function span(r) {
  if (r.system) return "system metadata (_/…)";
  const from = r.from === "" || r.from === undefined ? "−∞" : JSON.stringify(r.from);
  const to = r.to === "" || r.to === undefined ? "+∞" : JSON.stringify(r.to);
  return "[" + from + ", " + to + ")";
}

function ids(list) {
  return Array.isArray(list) && list.length ? list.join(", ") : "–";
}

function card(parent, label, value, cls) {
  const c = el("div", null, "card");
  c.appendChild(el("b", value, cls));
  c.appendChild(el("span", label, "muted"));
  parent.appendChild(c);
}

function render(cluster, backups) {
  const nodes = cluster.nodes || [];
  const ranges = cluster.ranges || [];
  const under = cluster.under_replicated || [];
  const jobs = (cluster.placement && cluster.placement.jobs) || [];
  document.getElementById("cluster").textContent =
    "cluster " + (cluster.cluster_id || "?") + " · replication factor " + cluster.replication_factor;

  const summary = document.getElementById("summary");
  summary.replaceChildren();
  const live = nodes.filter((n) => n.status === "NODE_RUNNING").length;
  card(summary, "live nodes", live + " / " + nodes.length, live === nodes.length ? "ok" : "warn");
  card(summary, "ranges", ranges.length);
  card(summary, "under-replicated", under.length, under.length ? "bad" : "ok");
  card(summary, "placement jobs", jobs.length);
  card(summary, "data (leaders' estimate)", bytes(ranges.reduce((s, r) => s + (r.approx_bytes || 0), 0)));

  const nb = document.querySelector("#nodes tbody");
  nb.replaceChildren();
  for (const n of nodes) {
    const [word, cls] = STATUS[n.status] || [n.status, "warn"];
    row(nb, [el("td", n.node_id, "num"), el("td", word, cls), el("td", n.client_address || "unknown", "mono"),
      el("td", n.peer_address, "mono"), el("td", (n.partitions || []).length, "num"), ids(n.leader_of)])
      .dataset.status = word;
  }
  document.getElementById("nodes-count").textContent = "(" + nodes.length + ")";

  const rb = document.querySelector("#ranges tbody");
  rb.replaceChildren();
  for (const r of ranges) {
    const health = r.under_replicated
      ? el("td", "under-replicated (" + r.live_replicas + " live)", "bad")
      : r.leader === null ? el("td", "no leader", "bad") : el("td", "ok", "ok");
    row(rb, [el("td", r.range_id, "num"), el("td", span(r), "mono"), r.leader === null ? "–" : String(r.leader),
      ids(r.replicas), el("td", bytes(r.approx_bytes), "num"), el("td", r.qps === null ? "–" : r.qps, "num"), health])
      .dataset.range = r.range_id;
  }
  document.getElementById("ranges-count").textContent = "(" + ranges.length + ")";

  const jl = document.getElementById("jobs");
  jl.replaceChildren();
  for (const j of jobs) jl.appendChild(el("li", j));
  for (const b of (cluster.placement && cluster.placement.blocked) || []) jl.appendChild(el("li", "blocked: " + b, "bad"));
  if (!jl.children.length) jl.appendChild(el("li", "none", "muted"));
  document.getElementById("jobs-count").textContent = "(" + jobs.length + ")";

  const bb = document.querySelector("#backups tbody");
  bb.replaceChildren();
  const recent = backups.slice(-10).reverse();
  for (const b of recent) {
    row(bb, [el("td", b.id, "mono"), b.kind, b.time, el("td", b.rows, "num"), el("td", bytes(b.bytes), "num"),
      el("td", (b.host ? b.host + ":" : "") + (b.dir || ""), "mono")]);
  }
  if (!recent.length) row(bb, [el("td", "none recorded", "muted")]);
  document.getElementById("backups-count").textContent = "(" + backups.length + ")";
}

async function fetchJson(path) {
  const resp = await fetch(path, { cache: "no-store" });
  const body = await resp.json().catch(() => ({ error: resp.status + " " + resp.statusText }));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const [cluster, backups] = await Promise.all([fetchJson("/api/v1/cluster"), fetchJson("/api/v1/backups")]);
    render(cluster, backups);
    error.hidden = true;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (e) {
    error.textContent = "Cannot read the cluster's state: " + e.message;
    error.hidden = false;
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
