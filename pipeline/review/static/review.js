// editroute review: the grid, the keyboard, the before/after viewer. Vanilla JS, no build step, nothing fetched
// from outside this server. The grid holds one page of jobs (keyset cursors from /api/jobs); thumbnails load
// lazily; full-size images load only in the viewer.
"use strict";

const $ = (sel) => document.querySelector(sel);
const FILTERS = ["backend", "tier", "tag", "status", "decision"];
const state = {
  items: [], selected: 0, next: null, prev: null, cursor: {}, filters: {}, notes: {}, viewer: false,
  keys: Promise.resolve(), // keyboard actions run one after another, in the order they were typed
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (response.status === 401) { location.reload(); throw new Error("log in again"); }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function say(text) {
  const s = $("#status");
  s.textContent = text;
  s.classList.add("show");
  clearTimeout(say.timer);
  say.timer = setTimeout(() => s.classList.remove("show"), 1600);
}

const money = (usd) => (usd === null || usd === undefined ? "–" : "$" + Number(usd).toFixed(Number(usd) < 0.01 ? 5 : 4));
const pct = (x) => (x === null || x === undefined ? "–" : Math.round(x * 100) + "%");

// ---- filters and summary ----------------------------------------------------------------------------------

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const f of FILTERS) state.filters[f] = params.get(f) || "";
}

function writeHash() {
  const params = new URLSearchParams();
  for (const f of FILTERS) if (state.filters[f]) params.set(f, state.filters[f]);
  history.replaceState(null, "", "#" + params.toString());
}

function renderTotals(t) {
  const box = $("#totals");
  box.replaceChildren(
    el("span", { class: "big" }, el("b", { text: String(t.accepted) }), " accepted"),
    el("span", { text: `${t.rejected} rejected · ${t.skipped} skipped · ${t.jobs} jobs` }),
    el("span", {}, "cost per accepted edit ", el("b", { id: "cpa", text: money(t.cost_per_accepted_usd) })),
  );
  for (const b of t.backends) {
    box.append(el("span", { class: "backend", "data-backend": b.backend, title: `spent ${money(b.cost_usd)} on ${b.jobs} job(s)` },
      el("b", { text: b.backend }), ` ${b.accepted}/${b.judged} accepted (${pct(b.acceptance)}) · `,
      el("span", { class: "cpa", text: b.judged && !b.accepted ? "none accepted" : money(b.cost_per_accepted_usd) }),
      " per accepted edit"));
  }
}

async function loadSummary() {
  const s = await api("api/summary");
  $("#run").textContent = s.run;
  $("#reviewer").textContent = s.reviewer;
  if (s.stand_ins) {
    const w = $("#standins");
    w.hidden = false;
    w.textContent = `STAND-INS: these outputs came from fake backends (${s.stand_ins}). Decisions here are for trying ` +
      "the page; their quality file is marked source: stand-ins and a policy refuses it unless it opts in.";
  }
  renderTotals(s.totals);
  for (const f of FILTERS) {
    const select = document.querySelector(`select[data-filter="${f}"]`);
    const values = s.facets[f] || [];
    const options = [el("option", { value: "", text: "all" })];
    if (f === "decision") options.push(el("option", { value: "none", text: "undecided" }));
    for (const v of values) options.push(el("option", { value: v.value, text: `${v.value} (${v.jobs})` }));
    select.replaceChildren(...options);
    select.value = state.filters[f];
  }
}

// ---- the grid ---------------------------------------------------------------------------------------------

function thumb(item, role) {
  if (!item.has[role]) return el("figure", {}, el("div", { class: "none", text: `no ${role}` }), el("figcaption", { text: role }));
  const img = el("img", {
    loading: "lazy", decoding: "async", alt: `${role} of ${item.id}`,
    src: `api/jobs/${encodeURIComponent(item.id)}/thumb/${role}?v=${item.version}`,
  });
  return el("figure", {}, img, el("figcaption", { text: role }));
}

function card(item, index) {
  const meta = el("div", { class: "meta" },
    el("span", { class: "id", text: item.id }), " ",
    el("span", { class: `badge ${item.decision || ""}`, text: item.decision || "" }), el("br"),
    el("span", { text: [item.backend || "?", item.tier || "", item.cost_usd !== null ? money(item.cost_usd) : "",
      item.latency_s !== null ? item.latency_s.toFixed(2) + " s" : "", item.status !== "done" ? item.status : ""]
      .filter(Boolean).join(" · ") }));
  if (item.tags.length) meta.append(el("br"), el("span", { class: "tags", text: item.tags.map((t) => "#" + t).join(" ") }));
  if (item.error) meta.append(el("br"), el("span", { class: "error", text: item.error.slice(0, 160) }));
  if (state.notes[item.id]) meta.append(el("br"), el("span", { class: "note", text: "note: " + state.notes[item.id] }));
  const node = el("article", {
    class: `card ${item.decision || ""}`, tabindex: "-1", "data-id": item.id, "data-index": String(index),
    "data-decision": item.decision || "", "data-backend": item.backend || "", title: item.prompt || "",
  }, el("div", { class: "thumbs" }, thumb(item, "input"), thumb(item, "mask"), thumb(item, "output")), meta);
  node.addEventListener("click", () => select(index));
  node.addEventListener("dblclick", () => { select(index); openViewer(); });
  return node;
}

function renderGrid() {
  const grid = $("#grid");
  grid.replaceChildren(...state.items.map(card));
  $("#empty").hidden = state.items.length > 0;
  $("#prev").disabled = state.prev === null;
  $("#next").disabled = state.next === null;
  select(Math.min(state.selected, Math.max(0, state.items.length - 1)), false);
}

async function loadPage(cursor = {}, selectIndex = 0) {
  const params = new URLSearchParams();
  for (const f of FILTERS) if (state.filters[f]) params.set(f, state.filters[f]);
  if (cursor.after !== undefined) params.set("after", cursor.after);
  if (cursor.before !== undefined) params.set("before", cursor.before);
  const page = await api("api/jobs?" + params.toString());
  state.items = page.items;
  state.next = page.next;
  state.prev = page.prev;
  state.cursor = cursor;
  state.selected = selectIndex < 0 ? page.items.length + selectIndex : selectIndex;
  if (page.matching !== null) $("#matching").textContent = `${page.matching} job(s)`;
  renderGrid();
  document.body.dataset.ready = "1";
}

function cards() { return Array.from(document.querySelectorAll("#grid .card")); }

function select(index, scroll = true) {
  const all = cards();
  if (!all.length) return;
  index = Math.max(0, Math.min(index, all.length - 1));
  all.forEach((c) => c.classList.remove("selected"));
  state.selected = index;
  all[index].classList.add("selected");
  all[index].setAttribute("aria-selected", "true");
  if (scroll) all[index].scrollIntoView({ block: "nearest" });
  if (state.viewer) showInViewer(state.items[index]);
}

function columns() {
  const all = cards();
  if (all.length < 2) return 1;
  const top = all[0].offsetTop;
  const n = all.findIndex((c) => c.offsetTop !== top);
  return n < 0 ? all.length : n;
}

async function move(delta) {
  const target = state.selected + delta;
  if (target >= state.items.length && state.next !== null) return loadPage({ after: state.next }, 0);
  if (target < 0 && state.prev !== null) return loadPage({ before: state.prev }, -1);
  select(target);
}

// ---- decisions --------------------------------------------------------------------------------------------

async function decide(decision) {
  const item = state.items[state.selected];
  if (!item) return;
  try {
    const note = state.notes[item.id];
    const result = await api(`api/jobs/${encodeURIComponent(item.id)}/decision`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(note ? { decision, note } : { decision }),
    });
    delete state.notes[item.id];
    state.items[state.selected] = result.item;
    const old = cards()[state.selected];
    const fresh = card(result.item, state.selected);
    old.replaceWith(fresh);
    renderTotals(result.totals);
    say(`${item.id}: ${decision}`);
    await move(1); // the last job of the last page stays selected
  } catch (err) {
    say(`${item.id}: ${err.message}`);
  }
}

function noteFor() {
  const item = state.items[state.selected];
  if (!item) return;
  $("#note-job").textContent = item.id;
  $("#note").value = state.notes[item.id] || "";
  $("#notebox").showModal();
  $("#note").focus();
}

$("#note").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    const item = state.items[state.selected];
    const text = $("#note").value.trim();
    if (text) state.notes[item.id] = text; else delete state.notes[item.id];
    $("#notebox").close();
    cards()[state.selected].replaceWith(card(item, state.selected));
    select(state.selected);
    say(text ? "note kept: press a, r or s to decide with it" : "note cleared");
  }
});

// ---- the viewer -------------------------------------------------------------------------------------------

function setSplit(value) {
  value = Math.max(0, Math.min(100, value));
  $("#v-split").value = value;
  $("#v-before-clip").style.clipPath = `inset(0 ${100 - value}% 0 0)`;
  $("#v-handle").style.left = value + "%";
}

async function showInViewer(item) {
  if (!item) return;
  const id = encodeURIComponent(item.id);
  $("#v-id").textContent = item.id;
  $("#v-meta").textContent = [item.backend, item.tier, money(item.cost_usd), item.latency_s !== null ? item.latency_s.toFixed(2) + " s" : ""].join(" · ");
  const badge = $("#v-decision");
  badge.className = `badge ${item.decision || ""}`;
  badge.textContent = item.decision || "";
  $("#v-before").src = item.has.input ? `api/jobs/${id}/full/input` : "";
  $("#v-after").src = item.has.output ? `api/jobs/${id}/full/output?v=${item.version}` : "";
  $("#v-prompt").textContent = item.prompt || "";
  for (const sel of ["#v-reasons", "#v-attempts", "#v-history"]) $(sel).replaceChildren();
  try {
    const d = await api(`api/jobs/${id}`);
    if (state.items[state.selected]?.id !== item.id) return; // moved on meanwhile
    $("#v-reasons").replaceChildren(...d.reasons.map((r) => el("li", { text: r })));
    $("#v-attempts").replaceChildren(...d.attempts.map((a) =>
      el("li", { text: `${a.backend}: ${a.error_class ? a.error_class + " " + (a.error || "") : "ok"} · ${money(a.cost_usd)}` })));
    $("#v-history").replaceChildren(...d.history.map((h) =>
      el("li", { text: `${new Date(h.at).toLocaleString()} ${h.reviewer}: ${h.decision}${h.note ? " (" + h.note + ")" : ""}` })));
  } catch (err) {
    say(err.message);
  }
}

function openViewer() {
  if (!state.items.length) return;
  state.viewer = true;
  $("#viewer").hidden = false;
  setSplit(50);
  showInViewer(state.items[state.selected]);
}

function closeViewer() {
  state.viewer = false;
  $("#viewer").hidden = true;
  $("#v-before").removeAttribute("src");
  $("#v-after").removeAttribute("src");
}

function flip() {
  const c = $("#compare");
  if (!c.classList.contains("flipped")) c.classList.add("flipped");
  else c.classList.toggle("show-after");
}

$("#v-split").addEventListener("input", (e) => { $("#compare").classList.remove("flipped", "show-after"); setSplit(+e.target.value); });
$("#compare").addEventListener("pointermove", (e) => {
  if (!e.buttons) return;
  const r = e.currentTarget.getBoundingClientRect();
  $("#compare").classList.remove("flipped", "show-after");
  setSplit(((e.clientX - r.left) / r.width) * 100);
});
$("#v-flip").addEventListener("click", flip);
$("#v-close").addEventListener("click", closeViewer);

// ---- keyboard ---------------------------------------------------------------------------------------------

document.addEventListener("keydown", (e) => {
  if (e.target.closest && e.target.closest("input, textarea, select, dialog[open]")) {
    if (e.key === "Escape" && e.target.tagName === "SELECT") e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key;
  const handled = {
    a: () => decide("accept"), r: () => decide("reject"), s: () => decide("skip"), n: noteFor,
    j: () => move(1), k: () => move(-1), ArrowRight: () => move(1), ArrowLeft: () => move(-1),
    ArrowDown: () => move(state.viewer ? 1 : columns()), ArrowUp: () => move(state.viewer ? -1 : -columns()),
    Enter: () => (state.viewer ? closeViewer() : openViewer()), " ": () => (state.viewer ? flip() : openViewer()),
    Escape: () => closeViewer(), t: () => state.viewer && flip(),
    "[": () => state.viewer && setSplit(+$("#v-split").value - 10), "]": () => state.viewer && setSplit(+$("#v-split").value + 10),
    "?": () => $("#help").showModal(),
  }[key];
  if (handled) {
    e.preventDefault();
    // a fast reviewer types ahead: each key waits for the one before (a decision moves the selection on)
    state.keys = state.keys.then(handled).catch((err) => say(err.message));
  }
});

for (const select_ of document.querySelectorAll("select[data-filter]")) {
  select_.addEventListener("change", (e) => {
    state.filters[e.target.dataset.filter] = e.target.value;
    writeHash();
    e.target.blur();
    loadPage();
  });
}
$("#prev").addEventListener("click", () => state.prev !== null && loadPage({ before: state.prev }, 0));
$("#next").addEventListener("click", () => state.next !== null && loadPage({ after: state.next }, 0));
$("#help-button").addEventListener("click", () => $("#help").showModal());

(async function start() {
  readHash();
  try {
    await loadSummary();
    await loadPage();
  } catch (err) {
    say(err.message);
    document.body.dataset.ready = "error";
  }
})();
