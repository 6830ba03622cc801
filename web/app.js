// quartier dashboard: reads the node's HTTP API and follows its websocket.
// No market logic here: every figure comes from the chain's settlements.
"use strict";

const REGION = 1;
const state = {
  status: null,
  params: null,
  summaries: [],
  lastSettlement: null,
  book: null,
  bookSlot: null,
  meters: [],
  household: null,
  audit: null,
  sealed: null,
  reports: [],
  updates: 0,
};
window.quartier = state;

// ---- formatting -----------------------------------------------------------
const kwh = (wh) => (wh / 1000).toLocaleString(undefined, { maximumFractionDigits: wh < 10000 ? 3 : 1 }) + " kWh";
const rp = (mrp) => (mrp / 1000).toFixed(2) + " Rp/kWh";
const chf = (urp) => (urp / 1e8).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }) + " CHF";
const clock = (ms) => new Date(ms).toLocaleTimeString();
const short = (id) => (id ? id.slice(0, 8) + "…" : "–");
// Mode A: an order names no meter, only a one-time payee address.
const party = (o) => (o.shielded ? "shielded" : short(o.meter));
// Mode B: orders are sealed; the chain shows counts and signed aggregates.
const sealedMode = () => !!state.status && state.status.privacy === "enclave";
// A digest as the API sends it: hex, or an array of bytes.
const hexOf = (d) => (typeof d === "string" ? d : d.map((b) => b.toString(16).padStart(2, "0")).join(""));
const el = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

// ---- chain ----------------------------------------------------------------
async function refreshStatus() {
  const s = await api("/api/v1/status");
  state.status = s;
  const region = (s.regions || []).find((r) => r.region === REGION);
  if (region) state.params = region.params;
  el("chain-pill").textContent = `height ${s.height} · ${clock(s.time_ms)} · mempool ${s.mempool}`;
  showPrivacyMode(s);
  el("chain").innerHTML = [
    ["height", s.height],
    ["last block", clock(s.time_ms)],
    ["slot length", s.slot_ms / 1000 + " s (a 15-minute market slot)"],
    ["mempool", s.mempool + " txs"],
    ["state root", `<span class="id">${esc(s.root.slice(0, 16))}…</span>`],
  ].map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
  el("validators").innerHTML = s.validators
    .map((v) => `<li><span class="id">${esc(short(v))}</span> <span class="ok">● in the validator set</span></li>`)
    .join("");
}

// ---- governance -----------------------------------------------------------
async function refreshGovernance() {
  const g = await api("/api/v1/governance");
  state.governance = g;
  const role = (name) => {
    const a = g.authorities[name];
    const flag = a.frozen ? ' <span class="warn">● frozen by governance</span>' : "";
    return `<dt>${name}</dt><dd><span class="id">${esc(short(a.key))}</span>${flag}</dd>`;
  };
  el("roles").innerHTML = role("dso") + role("utility");
  // Consensus epochs: a set voted in or out signs from the next boundary.
  const c = g.consensus;
  el("epoch-now").textContent = c.next_boundary === null
    ? "one epoch: the genesis validators sign for good"
    : `epoch ${c.epoch} of ${c.epoch_blocks} blocks; a change voted now signs from height ${c.next_boundary}`;
  el("epochs").innerHTML = c.validator_sets.map((v) =>
    `<li>from epoch ${v.from_epoch} (height ${v.from_height}): ${v.validators.length} validators ` +
    v.validators.map((k) => `<span class="id">${esc(short(k))}</span>`).join(" ") + "</li>").join("");
  const n = g.validators.length;
  const needed = (change) => ("freeze" in change ? Math.floor(n / 3) + 1 : Math.ceil((2 * n) / 3));
  el("proposals").innerHTML = g.proposals.length === 0
    ? '<li class="muted">no open proposals</li>'
    : g.proposals.map((p) => {
      const what = Object.keys(p.change)[0].replace("_", " ");
      return `<li>#${p.id} ${esc(what)}: ${p.yes_count} of ${needed(p.change)} yes votes, ${p.no_count} no</li>`;
    }).join("");
}

// ---- order book -----------------------------------------------------------
async function refreshBook() {
  const s = state.status;
  if (!s) return;
  const current = Math.floor(s.time_ms / s.slot_ms);
  // The book filling now: the current slot, or the next if it is empty.
  let slot = current;
  let body = await api(`/api/v1/regions/${REGION}/slots/${slot}`);
  if (!body.book) {
    const next = await api(`/api/v1/regions/${REGION}/slots/${slot + 1}`);
    if (next.book) { slot += 1; body = next; }
  }
  if (sealedMode()) {
    // The next slot fills while the current one is still open.
    const next = await api(`/api/v1/regions/${REGION}/slots/${slot + 1}`);
    const count = (body.sealed_orders || 0) + (next.sealed_orders || 0);
    state.book = { sealed: count };
    state.bookSlot = slot;
    el("book-slot").textContent = `slots ${slot}–${slot + 1}`;
    el("depth").innerHTML = `<text x="300" y="120" text-anchor="middle" fill="#666">${count} sealed orders</text>` +
      `<text x="300" y="145" text-anchor="middle" fill="#999" font-size="12">prices and amounts stay inside the enclaves until the signed report</text>`;
    el("book-summary").textContent = `${count} sealed orders in the open slots`;
    return;
  }
  state.book = body.book;
  state.bookSlot = slot;
  el("book-slot").textContent = `slot ${slot}, open until ${clock((slot + 1) * s.slot_ms + s.gate_ms)}`;
  drawDepth(body.book ? body.book.orders : []);
}

function steps(orders, side) {
  const list = orders.filter((o) => o.order.side === side).map((o) => o.order);
  list.sort((a, b) => (side === "buy" ? b.limit - a.limit : a.limit - b.limit));
  let total = 0;
  return list.map((o) => { const from = total; total += o.energy; return { from, to: total, price: o.limit }; });
}

function drawDepth(orders) {
  const p = state.params;
  const svg = el("depth");
  if (!p) return;
  const buys = steps(orders, "buy");
  const sells = steps(orders, "sell");
  const maxE = Math.max(1, buys.length ? buys[buys.length - 1].to : 0, sells.length ? sells[sells.length - 1].to : 0);
  const [W, H, L, B, T] = [600, 260, 60, 30, 10];
  const x = (e) => L + ((W - L - 10) * e) / maxE;
  const y = (pr) => T + (H - T - B) * (1 - (pr - p.feed_in_tariff) / Math.max(1, p.grid_tariff - p.feed_in_tariff));
  const path = (st) => st.map((s, i) => `${i ? "L" : "M"}${x(s.from).toFixed(1)},${y(s.price).toFixed(1)} L${x(s.to).toFixed(1)},${y(s.price).toFixed(1)}`).join(" ");
  // Matched volume: walk both curves while the bid covers the ask.
  let matched = 0;
  for (let i = 0, j = 0, used = 0, usedS = 0; i < buys.length && j < sells.length;) {
    if (buys[i].price < sells[j].price + p.local_fee) break;
    const b = buys[i].to - buys[i].from - used, s = sells[j].to - sells[j].from - usedS;
    const e = Math.min(b, s);
    matched += e; used += e; usedS += e;
    if (used === buys[i].to - buys[i].from) { i++; used = 0; }
    if (usedS === sells[j].to - sells[j].from) { j++; usedS = 0; }
  }
  let g = "";
  for (const tick of [p.feed_in_tariff, (p.feed_in_tariff + p.grid_tariff) / 2, p.grid_tariff]) {
    g += `<line x1="${L}" x2="${W - 10}" y1="${y(tick)}" y2="${y(tick)}" stroke="#eee"/><text x="${L - 4}" y="${y(tick) + 4}" text-anchor="end" font-size="11">${(tick / 1000).toFixed(1)}</text>`;
  }
  g += `<text x="${L}" y="${H - 8}" font-size="11">0</text><text x="${W - 10}" y="${H - 8}" font-size="11" text-anchor="end">${kwh(maxE)}</text>`;
  g += `<text x="${L + 4}" y="${T + 10}" font-size="11" fill="#666">Rp/kWh</text>`;
  if (buys.length) g += `<path class="buy" d="${path(buys)}" fill="none" stroke="var(--buy)" stroke-width="2"/>`;
  if (sells.length) g += `<path class="sell" d="${path(sells)}" fill="none" stroke="var(--sell)" stroke-width="2"/>`;
  if (matched > 0) g += `<line class="crossing" x1="${x(matched)}" x2="${x(matched)}" y1="${T}" y2="${H - B}" stroke="#333" stroke-dasharray="3 3"/>`;
  if (!orders.length) g += `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#999">no orders yet in this slot</text>`;
  svg.innerHTML = g;
  el("book-summary").textContent = `${buys.length} buys, ${sells.length} sells, ${kwh(matched)} would match now`;
}

// ---- settlements ----------------------------------------------------------
// Mode B: a signed report's public aggregates in the shape of a settlement summary.
function reportSummary(r) {
  const a = r.summary.aggregates;
  return {
    slot: r.summary.slot,
    orders: a.sealed,
    local_energy: a.totals.local_energy,
    grid_import: a.totals.grid_import,
    grid_export: a.totals.grid_export,
    price_min: a.prices ? a.prices.min : null,
    price_mean: a.prices ? a.prices.mean : null,
    price_max: a.prices ? a.prices.max : null,
  };
}

async function refreshReports() {
  const body = await api(`/api/v1/regions/${REGION}/reports?last=96`);
  state.reports = body.reports;
  state.summaries = body.reports.map(reportSummary);
  drawPrices(state.summaries);
  drawEnergy(state.summaries);
  drawToday(state.summaries);
  const last = body.reports[body.reports.length - 1];
  if (last) {
    const a = last.summary.aggregates;
    const t = a.totals;
    const paid = last.summary.payouts.reduce((sum, [, amount]) => sum + amount, 0);
    el("trades-slot").textContent = `slot ${last.summary.slot}`;
    el("trades-summary").textContent = `${a.sealed} sealed orders, ${a.cleared} cleared, ${kwh(t.local_energy)} locally, ` +
      `${kwh(t.grid_import)} from and ${kwh(t.grid_export)} to the grid; ${last.summary.payouts.length} withdrawals paid (${chf(paid)})`;
    const prices = a.prices ? `${rp(a.prices.min)} – ${rp(a.prices.max)}, mean ${rp(a.prices.mean)}` : "no local trade";
    el("trades").querySelector("tbody").innerHTML =
      `<tr><td colspan="4">trade prices ${esc(prices)}</td></tr>` +
      `<tr><td colspan="4" class="muted">who traded with whom stays inside the enclaves; each household opens its own sealed receipt (root <span class="id">${esc(hexOf(last.summary.receipts_root).slice(0, 16))}…</span>)</td></tr>`;
  }
  await refreshSealed();
  state.updates += 1;
}

async function refreshSealed() {
  const s = await api("/api/v1/sealed");
  state.sealed = s;
  el("sealed-market").hidden = false;
  const c = s.committee;
  const epoch = s.epochs.length ? s.epochs[s.epochs.length - 1] : null;
  el("committee").innerHTML = [
    ["members", c ? c.members.map((m) => `<span class="id">${esc(short(m))}</span>`).join(" ") : "forming…"],
    ["threshold", c ? `${c.threshold} of ${c.members.length} sign a report` : "–"],
    ["status", !c ? "–" : c.evicted && c.evicted.length
      ? `${c.evicted.length} member(s) evicted (measurement revoked): no new orders until a committee without them takes office`
      : `in office, keys epochs from ${c.first_epoch ?? 0}`],
    ["candidates", (s.committee_candidates || []).length
      ? s.committee_candidates.map((k) => `<span class="id">${esc(short(k.group_key))}</span> (${k.members.length} members)`).join(", ") + " await the validators' seat_committee vote"
      : "none"],
    ["registered enclaves", `${s.enclaves.length} (attestation simulated)`],
    ["latest epoch key", epoch ? `epoch ${epoch.epoch} <span class="id">${esc(epoch.public_key.slice(0, 16))}…</span>` : "–"],
    ["custody", chf(s.custody)],
    ["batches awaiting a report", String(s.batches.length)],
  ].map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
}

async function refreshSettlements() {
  if (sealedMode()) return refreshReports();
  const body = await api(`/api/v1/regions/${REGION}/settlements?last=96`);
  state.summaries = body.settlements;
  drawPrices(state.summaries);
  drawEnergy(state.summaries);
  drawToday(state.summaries);
  const last = state.summaries[state.summaries.length - 1];
  if (last) {
    const detail = await api(`/api/v1/regions/${REGION}/slots/${last.slot}`);
    state.lastSettlement = detail.settlement;
    drawTrades(detail.settlement);
  }
  state.updates += 1;
}

function drawTrades(st) {
  el("trades-slot").textContent = `slot ${st.slot}`;
  const t = st.clearing.totals;
  el("trades-summary").textContent = `${st.orders.length} orders, ${st.clearing.trades.length} trades, ${kwh(t.local_energy)} locally, ${kwh(t.grid_import)} from and ${kwh(t.grid_export)} to the grid`;
  el("trades").querySelector("tbody").innerHTML = st.clearing.trades
    .map((tr) => `<tr><td class="id">${esc(party(st.orders[tr.buy]))}</td><td class="id">${esc(party(st.orders[tr.sell]))}</td><td>${(tr.energy / 1000).toFixed(3)}</td><td>${(tr.price / 1000).toFixed(2)}</td></tr>`)
    .join("") || `<tr><td colspan="4" class="muted">no local trades</td></tr>`;
}

function axisChart(svgId, list, draw) {
  const [W, H, L, B, T] = [600, svgId === "prices" ? 220 : 200, 50, 24, 10];
  const n = Math.max(1, list.length);
  const x = (i) => L + ((W - L - 10) * (i + 0.5)) / n;
  let g = draw({ W, H, L, B, T, x, n });
  if (list.length) {
    g += `<text x="${L}" y="${H - 6}" font-size="11">slot ${list[0].slot}</text><text x="${W - 10}" y="${H - 6}" font-size="11" text-anchor="end">slot ${list[list.length - 1].slot}</text>`;
  } else {
    g += `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#999">no settled slot yet</text>`;
  }
  el(svgId).innerHTML = g;
}

function drawPrices(list) {
  const p = state.params;
  if (!p) return;
  axisChart("prices", list, ({ W, H, L, B, T, x }) => {
    const y = (pr) => T + (H - T - B) * (1 - (pr - p.feed_in_tariff) / Math.max(1, p.grid_tariff - p.feed_in_tariff));
    let g = "";
    for (const [tariff, cls, colour] of [[p.grid_tariff, "grid", "#b30000"], [p.feed_in_tariff, "feedin", "#238b45"]]) {
      g += `<line class="${cls}" x1="${L}" x2="${W - 10}" y1="${y(tariff)}" y2="${y(tariff)}" stroke="${colour}" stroke-dasharray="6 4"/><text x="${L - 4}" y="${y(tariff) + 4}" text-anchor="end" font-size="11">${(tariff / 1000).toFixed(1)}</text>`;
    }
    const traded = list.map((s, i) => ({ s, i })).filter(({ s }) => s.price_mean !== null);
    for (const { s, i } of traded) {
      g += `<line x1="${x(i)}" x2="${x(i)}" y1="${y(s.price_max)}" y2="${y(s.price_min)}" stroke="#9ecae1" stroke-width="4"/>`;
    }
    if (traded.length) {
      g += `<path class="mean" d="${traded.map(({ s, i }, k) => `${k ? "L" : "M"}${x(i).toFixed(1)},${y(s.price_mean).toFixed(1)}`).join(" ")}" fill="none" stroke="#12324a" stroke-width="2"/>`;
    }
    return g;
  });
}

function drawEnergy(list) {
  axisChart("energy", list, ({ W, H, L, B, T, x, n }) => {
    const max = Math.max(1, ...list.map((s) => Math.max(s.local_energy + s.grid_import, s.grid_export)));
    const mid = T + (H - T - B) * 0.6;
    const up = (e) => ((mid - T) * e) / max;
    const down = (e) => ((H - B - mid) * e) / max;
    const w = Math.max(1, (W - L - 10) / n - 1);
    let g = `<line x1="${L}" x2="${W - 10}" y1="${mid}" y2="${mid}" stroke="#999"/><text x="${L + 4}" y="${T + 8}" font-size="11" fill="#666">${kwh(max)} per slot</text>`;
    list.forEach((s, i) => {
      const x0 = x(i) - w / 2;
      g += `<rect class="local" x="${x0}" y="${mid - up(s.local_energy)}" width="${w}" height="${up(s.local_energy)}" fill="var(--local)"/>`;
      g += `<rect x="${x0}" y="${mid - up(s.local_energy + s.grid_import)}" width="${w}" height="${up(s.grid_import)}" fill="var(--import)"/>`;
      g += `<rect x="${x0}" y="${mid}" width="${w}" height="${down(s.grid_export)}" fill="var(--export)"/>`;
    });
    return g;
  });
}

function drawToday(list) {
  const local = list.reduce((a, s) => a + s.local_energy, 0);
  const imported = list.reduce((a, s) => a + s.grid_import, 0);
  const exported = list.reduce((a, s) => a + s.grid_export, 0);
  el("local-share").textContent = local + imported > 0 ? ((100 * local) / (local + imported)).toFixed(1) + " %" : "–";
  el("local-kwh").textContent = kwh(local);
  el("grid-kwh").textContent = `${kwh(imported)} / ${kwh(exported)}`;
  el("today-span").textContent = list.length ? `over the last ${list.length} settled slots (${list.length / 4} h of market time)` : "";
}

// ---- privacy --------------------------------------------------------------
const MODES = {
  transparent: "Every order is signed by its meter's registered account: anyone reading the chain " +
    "links every order to its household and rebuilds its load profile.",
  shielded: "Mode A, shielded originators: every order is funded from a shielded pool and authorised by " +
    "a ring signature over the region's meters. It names a one-time payee, never a meter; its side, " +
    "limit and energy are public.",
  enclave: "Mode B, trusted auctioneer: orders are sealed to a key that only attested enclaves hold " +
    "(the TEE is simulated here) and cleared inside; the chain publishes the signed report.",
};

function showPrivacyMode(s) {
  const mode = s.privacy || (s.shielded ? "shielded" : "transparent");
  el("privacy-mode").textContent = mode;
  el("privacy-what").textContent = MODES[mode] || "";
}

const pct = (x) => (100 * x).toFixed(1) + " %";
const times = (x, chance) => (chance > 0 ? ` (${(x / chance).toFixed(1)} × chance)` : "");

async function refreshAudit() {
  if (!state.status || !state.status.audit) {
    el("audit").innerHTML = `<tbody><tr><td class="muted">this node serves no audit report</td></tr></tbody>`;
    return;
  }
  const response = await fetch("/api/v1/audit", { cache: "no-store" });
  if (response.status === 204) {
    el("audit").innerHTML = `<tbody><tr><td class="muted">waiting for the auditor's first report…</td></tr></tbody>`;
    return;
  }
  if (!response.ok) throw new Error("/api/v1/audit: " + response.status);
  const a = await response.json();
  state.audit = a;
  const [published, hidden] = a.reports || [];
  const rows = [];
  if (published) {
    const c = published.chance;
    rows.push(["orders attacked", `${published.orders} of ${published.households} households`]);
    rows.push(["chance of naming an order's household", pct(c)]);
    rows.push(["household named from what is published (top-1)", pct(published.top1) + times(published.top1, c)]);
    rows.push(["— orders of households without PV", pct(published.top1_consumers) + times(published.top1_consumers, c)]);
    rows.push(["— orders of prosumers", pct(published.top1_prosumers) + times(published.top1_prosumers, c)]);
    rows.push(["next order of the same household found", pct(published.linking_top1) + times(published.linking_top1, published.linking_chance)]);
  }
  if (hidden) rows.push(["named by amounts and prices alone (top-1)", pct(hidden.top1) + times(hidden.top1, hidden.chance)]);
  const k = a.cryptographic;
  if (k) {
    rows.push(["ring signers named from the published bytes", `${k.authorisations_named} of ${k.orders} orders, ${k.inputs_named} of ${k.inputs} inputs`]);
    rows.push(["key images, one-time signers, payees reused", `${k.key_image_repeats}, ${k.signer_repeats}, ${k.payee_repeats}`]);
    rows.push(["funds ring size left by the public amounts", `${k.effective_ring.toFixed(1)} of ${k.ring_size.toFixed(1)}`]);
    rows.push(["real input = newest ring member", pct(k.newest_member_top1) + times(k.newest_member_top1, k.ring_chance)]);
    rows.push(["real input = a payment of the last settlement", pct(k.recent_settlement_top1) + times(k.recent_settlement_top1, k.ring_chance)]);
    rows.push(["same household at the same book position", pct(k.position_linking_top1) + times(k.position_linking_top1, k.position_linking_chance)]);
  }
  const b = a.sealed;
  if (b) {
    rows.push(["sealed orders attacked", `${b.orders} of ${b.households - b.insiders} households (the insider runs ${b.insiders})`]);
    rows.push(["chance of naming an order's household", pct(b.chance)]);
    rows.push(["household named by the insider from what is published (top-1)", pct(b.top1) + times(b.top1, b.chance)]);
    rows.push(["sealed orders told apart by size, receipt and custody flows", b.features === 1 ? "none (all alike)" : `${b.features} kinds`]);
    rows.push(["profile error from the aggregates (profiles alone)", `${b.profile_error.toFixed(2)} (${b.profile_error_prior.toFixed(2)})`]);
  }
  if (a.foreign_orders) rows.push(["orders of other participants, not scored", String(a.foreign_orders)]);
  el("audit").innerHTML = "<tbody>" + rows.map(([name, value]) => `<tr><td>${esc(name)}</td><td class="num">${esc(value)}</td></tr>`).join("") + "</tbody>";
  el("audit-span").textContent = a.slot !== undefined ? `over ${a.slots} slot${a.slots === 1 ? "" : "s"}, up to slot ${a.slot}` : "";
}

// ---- household ------------------------------------------------------------
async function refreshMeters() {
  const body = await api(`/api/v1/regions/${REGION}/meters`);
  const known = new Set(state.meters.map((m) => m.meter));
  state.meters = body.meters;
  if (body.meters.every((m) => known.has(m.meter)) && known.size === body.meters.length) return;
  const select = el("meter");
  const chosen = select.value;
  select.innerHTML = `<option value="">choose a meter…</option>` + body.meters
    .map((m) => `<option value="${esc(m.meter)}">${esc(short(m.meter))} ${m.role === "prosumer" ? "☀ " + (m.pv_watts / 1000).toFixed(1) + " kWp" : "consumer"}</option>`)
    .join("");
  select.value = chosen;
}

async function refreshHousehold() {
  const id = el("meter").value;
  state.household = null;
  if (!id) { el("household").innerHTML = ""; return; }
  const account = await api(`/api/v1/accounts/${id}`);
  const rows = [];
  let saving = 0;
  for (const s of state.summaries.slice(-12).reverse()) {
    const st = (await api(`/api/v1/regions/${REGION}/slots/${s.slot}`)).settlement;
    if (!st) continue;
    st.orders.forEach((o, i) => {
      if (o.meter !== id) return;
      const r = st.clearing.orders[i];
      const utilityOnly = o.order.side === "buy" ? o.order.energy * st.params.grid_tariff : -o.order.energy * st.params.feed_in_tariff;
      const bill = o.order.side === "buy" ? r.pays : -r.receives;
      saving += utilityOnly - bill;
      rows.push({ slot: st.slot, side: o.order.side, limit: o.order.limit, energy: o.order.energy, matched: r.matched, money: o.order.side === "buy" ? -r.pays : r.receives });
    });
  }
  state.household = { id, balance: account.balance, fills: rows, saving };
  el("household").innerHTML =
    `<p>Balance <strong>${chf(account.balance)}</strong> · saving vs. utility over these slots <strong>${chf(saving)}</strong></p>` +
    `<table id="fills"><thead><tr><th>slot</th><th>order</th><th>filled locally</th><th>paid / received</th></tr></thead><tbody>` +
    (rows.map((r) => `<tr><td>${r.slot}</td><td>${r.side} ${kwh(r.energy)} at ≤ ${(r.limit / 1000).toFixed(2)}</td><td>${kwh(r.matched)}</td><td>${chf(r.money)}</td></tr>`).join("") ||
      `<tr><td colspan="4" class="muted">no orders in the last 12 settled slots</td></tr>`) +
    `</tbody></table>`;
}

// ---- live updates ---------------------------------------------------------
let pending = null;
function schedule(what) {
  pending = pending || new Set();
  pending.add(what);
  setTimeout(flush, 150);
}
let busy = false;
async function flush() {
  if (busy || !pending) return;
  const what = pending; pending = null; busy = true;
  try {
    await refreshStatus();
    await refreshGovernance();
    await refreshBook();
    if (what.has("settlement")) {
      await refreshSettlements();
      await refreshMeters();
      if (el("meter").value) await refreshHousehold();
      await refreshAudit();
    }
  } catch (e) {
    el("chain-pill").textContent = "node unreachable: " + e.message;
  } finally {
    busy = false;
    if (pending) setTimeout(flush, 150);
  }
}

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/stream");
  ws.onmessage = (m) => {
    const event = JSON.parse(m.data);
    schedule(event.type === "settlement" || event.type === "lagged" ? "settlement" : "block");
  };
  ws.onclose = () => setTimeout(connect, 2000);
}

el("meter").addEventListener("change", () => { refreshHousehold().catch(() => {}); });
schedule("settlement");
connect();
// A slow fallback in case the websocket is blocked by a proxy.
setInterval(() => schedule("settlement"), 10000);
