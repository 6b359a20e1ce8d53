// The live page of `otpmesh mesh up --ui`: one EventSource, one picture of the mesh per event,
// drawn with the DOM (textContent only: nothing a node says is parsed as HTML).
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function seconds(ms) {
  return ms === null || ms === undefined ? "" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}

function replace(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function drawGraph(nodes) {
  const graph = document.getElementById("graph");
  const n = nodes.length;
  const radius = n > 1 ? 200 : 0;
  const at = new Map();
  nodes.forEach((node, i) => {
    const angle = (2 * Math.PI * i) / Math.max(n, 1) - Math.PI / 2;
    at.set(node.name, [radius * Math.cos(angle), radius * Math.sin(angle)]);
  });
  const parts = [];
  const drawn = new Set();
  for (const node of nodes) {
    for (const peer of node.peers) {
      const key = [node.name, peer].sort().join(" ");
      if (drawn.has(key) || !at.has(peer)) continue;
      drawn.add(key);
      const [x1, y1] = at.get(node.name);
      const [x2, y2] = at.get(peer);
      parts.push(svg("line", { x1, y1, x2, y2 }));
    }
    for (const peer of node.cut_off) {
      const key = "cut " + [node.name, peer].sort().join(" ");
      if (drawn.has(key) || !at.has(peer)) continue;
      drawn.add(key);
      const [x1, y1] = at.get(node.name);
      const [x2, y2] = at.get(peer);
      parts.push(svg("line", { x1, y1, x2, y2, class: "cut" }));
    }
  }
  for (const node of nodes) {
    const [x, y] = at.get(node.name);
    const g = svg("g", { class: node.state === "running" ? "up" : "down", "data-graph-node": node.name });
    g.append(svg("circle", { cx: x, cy: y, r: n > 40 ? 6 : 12, class: `fill-${node.role}` }));
    const label = svg("text", { x, y: y + (n > 40 ? 16 : 26) });
    label.textContent = n > 40 ? "" : node.name;
    g.append(label);
    const title = svg("title", {});
    title.textContent = `${node.name} (${node.role}): ${node.state}, ${node.peer_count} peers`;
    g.append(title);
    parts.push(g);
  }
  graph.replaceChildren(...parts);
}

function nodeState(node) {
  if (node.state === "running" && !node.ready) return "starting";
  return node.state;
}

function drawNodes(nodes) {
  const up = nodes.filter((n) => n.state === "running").length;
  document.getElementById("node-summary").textContent = `${up} of ${nodes.length} running`;
  replace(document.querySelector("#nodes tbody"), nodes.map((node) => {
    const state = nodeState(node);
    const note = node.cut_off.length ? "cut off from " + node.cut_off.join(", ") : node.exit || "";
    const peers = node.peer_count > node.peers.length
      ? `${node.peer_count} (${node.peers.length} listed)` : String(node.peer_count);
    return el("tr", { "data-node": node.name, "data-state": node.state, "data-role": node.role },
      el("td", { class: "mono", title: node.peer_id }, node.name),
      el("td", { class: `role role-${node.role}` }, node.role),
      el("td", { class: `state state-${state}` }, state),
      el("td", { title: node.peers.join(", ") }, peers),
      el("td", {}, node.restarts),
      el("td", { class: "dim" }, note));
  }));
}

function drawRounds(rounds) {
  const longest = Math.max(1, ...rounds.map((r) => r.deliver_ms || r.seal_ms || 0));
  replace(document.querySelector("#rounds tbody"), rounds.slice().reverse().map((r) => {
    const bar = el("div", { class: "bar" });
    if (r.seal_ms !== null) {
      const s = el("span", { class: "seal" });
      s.style.width = `${(100 * r.seal_ms) / longest}%`;
      bar.append(s);
    }
    if (r.deliver_ms !== null && r.seal_ms !== null) {
      const d = el("span", { class: "deliver" });
      d.style.left = `${(100 * r.seal_ms) / longest}%`;
      d.style.width = `${(100 * (r.deliver_ms - r.seal_ms)) / longest}%`;
      bar.append(d);
    }
    const times = [r.seal_ms !== null ? "sealed " + seconds(r.seal_ms) : "",
                   r.deliver_ms !== null ? "delivered " + seconds(r.deliver_ms) : ""]
      .filter(Boolean).join(", ");
    const inn = r.included !== null ? `${r.included} (${r.accepted} accepted, quorum ${r.quorum})`
                                    : `${r.accepted} accepted, quorum ${r.quorum}`;
    return el("tr", { "data-round": r.round, "data-round-state": r.state },
      el("td", { class: "mono" }, r.round),
      el("td", { class: `state state-${r.state}` }, r.state),
      el("td", {}, inn),
      el("td", { class: "wide" }, bar, el("div", { class: "latency" }, times)),
      el("td", { class: "dim" }, r.failure || `opened at ${seconds(r.opened_ms)}`));
  }));
}

function drawCounts(counts) {
  const rows = [["OTPs issued", counts.otps_issued], ["OTPs received", counts.otps_received]];
  for (const [result, n] of Object.entries(counts.verifications)) rows.push(["verified: " + result, n]);
  document.getElementById("counts").replaceChildren(
    ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-count": k }, v)]));
}

function drawBeacon(beacon) {
  document.getElementById("no-beacon").hidden = beacon.length > 0;
  const list = document.getElementById("beacon");
  list.replaceChildren(...beacon.slice().reverse().map((b) =>
    el("li", { value: b.round, "data-beacon": b.round, title: `prev ${b.prev}` },
      `${b.value.slice(0, 24)}…  ← ${b.prev.slice(0, 8)}…  from [${b.from.join(",")}], verified by ${b.verified_by.length}`)));
}

function drawRejections(rejections) {
  document.getElementById("no-rejections").hidden = rejections.length > 0;
  replace(document.querySelector("#rejections tbody"), rejections.slice().reverse().map((r) =>
    el("tr", { "data-rejection": r.what },
      el("td", { class: "mono" }, seconds(r.at_ms)),
      el("td", { class: "mono" }, r.node),
      el("td", {}, r.what),
      el("td", {}, r.reason))));
}

function draw(view) {
  document.getElementById("mode").textContent = `${view.mode} mode`;
  document.getElementById("uptime").textContent = `up ${seconds(view.now_ms)}`;
  drawGraph(view.nodes);
  drawNodes(view.nodes);
  drawRounds(view.rounds);
  drawCounts(view.counts);
  drawBeacon(view.beacon);
  drawRejections(view.rejections);
  document.body.dataset.updated = String(view.now_ms);
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/events");
  source.addEventListener("state", (e) => {
    live.dataset.live = "yes";
    live.textContent = "live";
    try {
      draw(JSON.parse(e.data));
    } catch (err) {
      live.textContent = "bad update: " + err;
    }
  });
  source.onerror = () => {
    live.dataset.live = "no";
    live.textContent = "disconnected (retrying)";
  };
}

connect();
