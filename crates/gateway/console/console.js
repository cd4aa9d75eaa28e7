// Parley agent console: a reference client of the public API (REST under /api/v1 and
// the event stream). No framework and no build step. Everything a contact sends is put
// on the page as text (textContent), never as HTML.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
const STATE_LABELS = {
  ready: "Ready", not_ready: "Not Ready", after_work: "After Work",
  not_responding: "Not Responding", offline: "Offline",
};
const EMOJI = ["😊", "👍", "🙏", "🎉", "❤️", "😅", "👋", "✅", "📦", "🙂"];

const S = {
  session: null,      // {access_token, refresh_token, expires_at}
  me: null,
  reasons: [],
  queues: [],
  agents: [],
  offers: new Map(),  // interaction_id -> offer
  interactions: [],
  contacts: new Map(),
  current: null,      // {interaction, contact}
  transcript: [],     // messages shown, in time order
  prevCursor: null,
  lastEvent: null,
  socket: null,
  socketRetry: 0,
  attachment: null,   // {file, url}
  convSelected: null,
  refreshTimer: null,
  templates: [],
  dirSelected: null,
  notify: null,       // {template, rendered, image: {file, url} | null}
};

// ---------------------------------------------------------------------------------------
// Session

function loadSession() {
  try { S.session = JSON.parse(sessionStorage.getItem("parley.session") || "null"); } catch { S.session = null; }
  const last = sessionStorage.getItem("parley.lastEvent");
  S.lastEvent = last ? Number(last) : null;
}

function saveSession(tokens) {
  S.session = {
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    expires_at: Date.now() + tokens.expires_in * 1000,
  };
  sessionStorage.setItem("parley.session", JSON.stringify(S.session));
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(S.refreshTimer);
  if (!S.session) return;
  const wait = Math.max(5000, S.session.expires_at - Date.now() - 60000);
  S.refreshTimer = setTimeout(() => refresh().catch(() => {}), wait);
}

let refreshing = null;
async function refresh() {
  if (!S.session) throw new Error("signed out");
  if (!refreshing) {
    refreshing = (async () => {
      const res = await fetch(`${API}/auth/refresh`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: S.session.refresh_token }),
      });
      if (!res.ok) throw new Error("refresh refused");
      saveSession(await res.json());
      // The socket was opened with the old token, which the server will refuse when it
      // expires (4401): move to the new one now, resuming from the last event seen.
      if (S.socket) {
        const old = S.socket;
        S.socket = null;
        old.onclose = null;
        old.close(1000, "token refreshed");
        connect();
      }
    })().finally(() => { refreshing = null; });
  }
  return refreshing;
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

// A call to the API with the session's token; a 401 is answered by one refresh, and
// if that fails the agent signs in again (drafts stay in local storage).
async function api(method, path, body, extra = {}) {
  const call = () => {
    const headers = { authorization: `Bearer ${S.session ? S.session.access_token : ""}`, ...(extra.headers || {}) };
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body);
    }
    return fetch(path.startsWith("/") ? path : `${API}/${path}`, { method, headers, body: payload });
  };
  let res = await call();
  if (res.status === 401 && S.session) {
    try { await refresh(); res = await call(); } catch { /* falls through */ }
  }
  if (res.status === 401) {
    signedOut("Your session ended: sign in again (your drafts are kept).");
    throw new ApiError(401, null);
  }
  if (!res.ok) {
    let problem = null;
    try { problem = await res.json(); } catch { /* not json */ }
    throw new ApiError(res.status, problem);
  }
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

function signedOut(message) {
  clearTimeout(S.refreshTimer);
  S.session = null;
  sessionStorage.removeItem("parley.session");
  if (S.socket) { S.socket.onclose = null; S.socket.close(); S.socket = null; }
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("login-email").focus();
}

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  const res = await fetch(`${API}/auth/login`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: $("login-email").value, password: $("login-password").value }),
  });
  if (!res.ok) {
    let p = {};
    try { p = await res.json(); } catch { /* not json */ }
    $("login-error").textContent = p.detail || p.title || "Sign-in failed";
    return;
  }
  saveSession(await res.json());
  $("login-password").value = "";
  await start();
}

async function logout() {
  try { await api("POST", "auth/logout"); } catch { /* signed out anyway */ }
  sessionStorage.removeItem("parley.lastEvent");
  S.lastEvent = null;
  signedOut("");
}

// ---------------------------------------------------------------------------------------
// Small DOM helpers (text only)

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const shortTime = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "");

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

function notify(title, body) {
  if (!document.hidden || !("Notification" in window)) return;
  if (Notification.permission === "granted") new Notification(title, { body });
}

// ---------------------------------------------------------------------------------------
// State

function showState(agent) {
  const st = agent.state;
  const label = STATE_LABELS[st] || st;
  const reason = agent.reason ? ` (${reasonLabel(agent.reason)})` : "";
  $("state-now").textContent = label + reason;
  $("state-now").dataset.state = st;
  const value = st === "not_ready" && agent.reason ? `not_ready:${agent.reason}` : st;
  const sel = $("state-select");
  if ([...sel.options].some((o) => o.value === value)) sel.value = value;
  else sel.value = "";
  banner(agent.warning || "");
}

function reasonLabel(code) {
  const r = S.reasons.find((x) => x.code === code);
  return r ? r.label : code;
}

function fillStateSelect() {
  const sel = $("state-select");
  sel.replaceChildren(el("option", { value: "", text: "Change state…" }));
  sel.append(el("option", { value: "ready", text: "Ready" }));
  if (S.reasons.length === 0) sel.append(el("option", { value: "not_ready", text: "Not Ready" }));
  for (const r of S.reasons) sel.append(el("option", { value: `not_ready:${r.code}`, text: `Not Ready: ${r.label}` }));
  sel.append(el("option", { value: "after_work", text: "After Work" }));
}

async function setState() {
  const v = $("state-select").value;
  if (!v) return;
  const [state, reason] = v.split(":");
  try {
    const agent = await api("PUT", "me/state", reason ? { state, reason } : { state });
    showState(agent);
    if (state === "ready" && "Notification" in window && Notification.permission === "default") {
      Notification.requestPermission().catch(() => {});
    }
  } catch (e) {
    banner(e.message);
  }
}

async function loadMyState() {
  const mine = await api("GET", "me/state");
  showState(mine);
  S.offers = new Map(mine.offers.map((o) => [o.interaction_id, o]));
  await renderOffers();
}

// ---------------------------------------------------------------------------------------
// Contacts

async function contact(id, fresh = false) {
  if (!fresh && S.contacts.has(id)) return S.contacts.get(id);
  const c = await api("GET", `contacts/${id}`);
  S.contacts.set(id, c);
  return c;
}

// ---------------------------------------------------------------------------------------
// Offers

async function renderOffers() {
  const box = $("offers");
  const cards = [];
  for (const o of S.offers.values()) {
    let c = null;
    let first = "";
    try {
      c = await contact(o.contact_id);
      const page = await api("GET", `contacts/${o.contact_id}/messages?limit=1`);
      const m = page.items[page.items.length - 1];
      first = m ? messageText(m) : "";
    } catch { /* shown without */ }
    const count = el("span", { class: "countdown", dataset: { expires: o.expires_at } });
    const card = el("article", { class: "offer", "aria-label": `Offer from ${c ? c.name : "a contact"}`, dataset: { interaction: o.interaction_id } },
      el("strong", { class: "who", text: c ? c.name : o.contact_id, dir: "auto" }),
      el("span", { class: "muted", text: `${o.channel}${o.transfer ? " · transfer" : ""}` }),
      el("span", { class: "first", text: first, dir: "auto" }),
      count,
      el("div", { class: "actions" },
        el("button", { type: "button", class: "accept", text: "Accept", onclick: () => accept(o.interaction_id) }),
        el("button", { type: "button", class: "decline", text: "Decline", onclick: () => decline(o.interaction_id) })));
    cards.push(card);
  }
  box.replaceChildren(...cards);
  tickCountdowns();
}

function tickCountdowns() {
  for (const c of document.querySelectorAll(".countdown")) {
    const left = Math.max(0, Math.round((new Date(c.dataset.expires) - Date.now()) / 1000));
    c.textContent = `${left} s to answer`;
  }
}

async function accept(id) {
  try {
    await api("POST", `interactions/${id}/accept`);
    S.offers.delete(id);
    await renderOffers();
    await loadInteractions();
    await openInteraction(id);
  } catch (e) {
    banner(e.message);
    await loadMyState();
  }
}

async function decline(id) {
  try { await api("POST", `interactions/${id}/decline`); } catch (e) { banner(e.message); }
  S.offers.delete(id);
  await renderOffers();
}

// ---------------------------------------------------------------------------------------
// Interactions

// One at a time, in call order: a list read before an accept must not overwrite the one
// read after it.
let listing = Promise.resolve();
function loadInteractions() {
  listing = listing.catch(() => {}).then(readInteractions);
  return listing;
}

async function readInteractions() {
  const all = await api("GET", `interactions?agent=${S.me.id}`);
  S.interactions = all.filter((i) => i.state === "active" || i.state === "ended");
  const items = [];
  for (const i of S.interactions) {
    let name = i.contact_id;
    try { name = (await contact(i.contact_id)).name; } catch { /* id */ }
    const current = S.current && S.current.interaction.id === i.id;
    items.push(el("li", {}, el("button", {
      type: "button", "aria-current": current ? "true" : "false", dataset: { interaction: i.id },
      onclick: () => openInteraction(i.id),
    }, el("span", { text: name, dir: "auto" }), el("span", { class: "muted", text: ` · ${i.channel} · ${i.state}` }))));
  }
  $("interaction-list").replaceChildren(...items);
  if (S.current) {
    const now = S.interactions.find((i) => i.id === S.current.interaction.id);
    if (now) { S.current.interaction = now; renderHead(); } else closeInteraction();
  }
}

async function openInteraction(id) {
  saveDraft();
  closeNotify();
  const i = S.interactions.find((x) => x.id === id);
  if (!i) return;
  const c = await contact(i.contact_id, true);
  S.current = { interaction: i, contact: c };
  $("iv").hidden = false;
  renderHead();
  fillWrapUp();
  await fillTransfer();
  $("compose").value = localStorage.getItem(draftKey(id)) || "";
  $("search").value = "";
  $("search-hits").replaceChildren();
  await loadTranscript();
  for (const b of document.querySelectorAll("#interaction-list button")) {
    b.setAttribute("aria-current", b.dataset.interaction === id ? "true" : "false");
  }
  $("compose").focus();
}

function closeInteraction() {
  S.current = null;
  $("iv").hidden = true;
}

function renderHead() {
  const { interaction: i, contact: c } = S.current;
  $("iv-title").textContent = c.name;
  $("iv-title").dir = "auto";
  $("iv-meta").textContent = `${i.channel} · ${i.state}${i.accepted_at ? ` · since ${shortTime(i.accepted_at)}` : ""}`;
  const ident = (c.identities || []).find((x) => x.channel === i.channel);
  const w = $("iv-window");
  if (ident && ident.window_expires_at !== undefined && i.channel === "whatsapp") {
    w.dataset.open = ident.window_open ? "true" : "false";
    w.textContent = ident.window_open
      ? `Free-form replies allowed until ${time(ident.window_expires_at)}`
      : "The 24-hour window is closed: only a notification template can be sent";
  } else {
    w.dataset.open = "true";
    w.textContent = "";
  }
  const closed = i.channel === "whatsapp" && ident && ident.window_open === false;
  $("window-closed").hidden = !closed;
  $("compose").disabled = closed;
  $("send").disabled = closed;
  $("iv-end").disabled = i.state !== "active";
  $("iv-done").disabled = i.state === "done";
}

function fillWrapUp() {
  const i = S.current.interaction;
  const q = S.queues.find((x) => x.id === i.queue_id);
  const codes = q ? q.wrap_up_codes || [] : [];
  $("iv-wrapup").replaceChildren(el("option", { value: "", text: "No wrap-up code" }),
    ...codes.map((c) => el("option", { value: c, text: c })));
}

async function fillTransfer() {
  const opts = [el("option", { value: "", text: "Transfer to…" })];
  for (const q of S.queues) opts.push(el("option", { value: `queue:${q.id}`, text: `Queue: ${q.name}` }));
  try {
    for (const a of await api("GET", "agents/available")) {
      opts.push(el("option", { value: `agent:${a.user_id}`, text: `Agent: ${a.display_name}` }));
    }
  } catch { /* queues only */ }
  $("iv-transfer").replaceChildren(...opts);
}

async function act(what, body) {
  if (!S.current) return;
  const id = S.current.interaction.id;
  try {
    await api("POST", `interactions/${id}/${what}`, body);
    if (what === "done" || what === "transfer") {
      localStorage.removeItem(draftKey(id));
      closeInteraction();
    }
    await loadInteractions();
  } catch (e) {
    banner(e.message);
  }
}

// ---------------------------------------------------------------------------------------
// Transcript

function messageText(m) {
  if (m.text) return m.text;
  if (m.payload && m.payload.caption) return m.payload.caption;
  return m.kind === "text" ? "" : `[${m.kind}]`;
}

function renderMessage(m, highlight) {
  const text = messageText(m);
  const body = el("span", { class: "text", dir: "auto" });
  if (highlight) markWords(body, text, highlight); else body.textContent = text;
  const li = el("li", { class: `msg ${m.direction}`, dataset: { id: m.id }, dir: "auto" });
  for (const a of m.attachments || []) {
    if ((a.mime_type || "").startsWith("image/")) {
      const img = el("img", { alt: a.filename || "image" });
      loadImage(img, a.id);
      li.append(img);
    } else {
      li.append(el("span", { class: "file", text: a.filename || a.mime_type }));
    }
  }
  if (m.reply_to_id) {
    const to = S.transcript.find((x) => x.id === m.reply_to_id);
    li.append(el("span", { class: "reply-to", dataset: { replyTo: m.reply_to_id }, dir: "auto",
      text: `↪ ${to ? messageText(to).slice(0, 80) : "an earlier message"}` }));
  }
  li.append(body);
  const buttons = (m.payload && Array.isArray(m.payload.buttons)) ? m.payload.buttons : [];
  if (buttons.length) li.append(el("ul", { class: "chips", "aria-label": "Buttons" }, ...buttons.map((x) => el("li", { text: x.text || x.title || "", dir: "auto" }))));
  const who = m.direction === "inbound" ? "" : (m.sender && m.sender.type === "agent" ? "agent · " : "");
  const status = el("span", { class: "status", dataset: { status: m.status }, text: statusText(m) });
  li.append(el("span", { class: "meta" }, `${who}${m.channel} · ${shortTime(m.created_at)} · `, status));
  return li;
}

function statusText(m) {
  if (m.status === "failed") {
    const e = m.status_error || {};
    return `failed: ${e.title || e.message || e.code || "not delivered"}`;
  }
  return m.status;
}

// Images need the token: fetched and shown from a blob URL.
async function loadImage(img, id) {
  try {
    const res = await fetch(`${API}/attachments/${id}`, { headers: { authorization: `Bearer ${S.session.access_token}` } });
    if (res.ok) img.src = URL.createObjectURL(await res.blob());
  } catch { /* left blank */ }
}

function markWords(node, text, words) {
  const lower = text.toLowerCase();
  const ranges = [];
  for (const w of words) {
    if (!w) continue;
    let at = lower.indexOf(w);
    while (at >= 0) { ranges.push([at, at + w.length]); at = lower.indexOf(w, at + w.length); }
  }
  ranges.sort((a, b) => a[0] - b[0]);
  let pos = 0;
  for (const [a, b] of ranges) {
    if (a < pos) continue;
    node.append(text.slice(pos, a), el("mark", { text: text.slice(a, b) }));
    pos = b;
  }
  node.append(text.slice(pos));
}

function transcriptQuery(extra) {
  const media = $("media-filter").value;
  return `contacts/${S.current.contact.id}/messages?limit=30${media ? `&media=${media}` : ""}${extra || ""}`;
}

async function loadTranscript(around) {
  const page = await api("GET", transcriptQuery(around ? `&around=${around}` : ""));
  S.transcript = page.items;
  S.prevCursor = page.prev_cursor || null;
  drawTranscript(around);
}

function drawTranscript(focus, words) {
  const list = $("transcript");
  list.replaceChildren(...S.transcript.map((m) => renderMessage(m, focus === m.id ? words : null)));
  $("load-earlier").hidden = !S.prevCursor;
  const target = focus ? list.querySelector(`[data-id="${focus}"]`) : null;
  if (target) { target.classList.add("focus"); target.scrollIntoView({ block: "center" }); } else list.scrollTop = list.scrollHeight;
}

async function loadEarlier() {
  if (!S.prevCursor) return;
  const list = $("transcript");
  const height = list.scrollHeight;
  const page = await api("GET", transcriptQuery(`&before=${S.prevCursor}`));
  const known = new Set(S.transcript.map((m) => m.id));
  S.transcript = page.items.filter((m) => !known.has(m.id)).concat(S.transcript);
  S.prevCursor = page.prev_cursor || null;
  list.prepend(...page.items.filter((m) => !known.has(m.id)).map((m) => renderMessage(m)));
  $("load-earlier").hidden = !S.prevCursor;
  list.scrollTop = list.scrollHeight - height;
}

function addMessage(m) {
  if (!S.current || m.contact_id !== S.current.contact.id) return;
  const media = $("media-filter").value;
  if (media === "open_media" && m.channel !== "open_media") return;
  const existing = S.transcript.findIndex((x) => x.id === m.id);
  const list = $("transcript");
  if (existing >= 0) {
    S.transcript[existing] = m;
    const old = list.querySelector(`[data-id="${m.id}"]`);
    if (old) old.replaceWith(renderMessage(m));
    return;
  }
  S.transcript.push(m);
  const near = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  list.append(renderMessage(m));
  if (near || m.direction === "outbound") list.scrollTop = list.scrollHeight;
}

function updateStatus(p) {
  const m = S.transcript.find((x) => x.id === p.message_id);
  if (!m) return;
  m.status = p.status;
  if (p.error) m.status_error = p.error;
  const s = document.querySelector(`#transcript [data-id="${p.message_id}"] .status`);
  if (s) { s.dataset.status = m.status; s.textContent = statusText(m); }
}

async function search(ev) {
  ev.preventDefault();
  const q = $("search").value.trim();
  const hits = $("search-hits");
  if (!q) { hits.replaceChildren(); return; }
  const words = q.toLowerCase().split(/\s+/).filter(Boolean);
  const page = await api("GET", `contacts/${S.current.contact.id}/messages?limit=50&q=${encodeURIComponent(q)}`);
  if (page.items.length === 0) { hits.replaceChildren(el("li", { class: "muted", text: "No messages match." })); return; }
  hits.replaceChildren(...page.items.slice().reverse().map((m) => {
    const label = el("span", { dir: "auto" });
    markWords(label, messageText(m), words);
    return el("li", {}, el("button", {
      type: "button", dataset: { id: m.id },
      onclick: async () => { await loadTranscript(m.id); drawTranscript(m.id, words); },
    }, el("span", { class: "muted", text: `${shortTime(m.created_at)} · ` }), label));
  }));
}

// ---------------------------------------------------------------------------------------
// Composer

// Drafts are the signed-in user's own: another agent on the same browser never sees them.
const draftKey = (interaction) => `parley.draft.${S.me ? S.me.id : ""}.${interaction}`;

function saveDraft() {
  if (!S.current) return;
  const key = draftKey(S.current.interaction.id);
  const v = $("compose").value;
  if (v) localStorage.setItem(key, v); else localStorage.removeItem(key);
}

function setAttachment(file) {
  clearAttachment();
  if (!file) return;
  if (!/^image\/(jpeg|png|webp)$/.test(file.type)) { $("compose-error").textContent = "Only JPEG, PNG or WebP images can be sent."; return; }
  S.attachment = { file, url: URL.createObjectURL(file) };
  $("preview").src = S.attachment.url;
  $("preview").alt = `Image to send: ${file.name}`;
  $("preview").hidden = false;
  $("preview-clear").hidden = false;
}

function clearAttachment() {
  if (S.attachment) URL.revokeObjectURL(S.attachment.url);
  S.attachment = null;
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  $("preview-clear").hidden = true;
  $("attach").value = "";
}

async function send(ev) {
  ev.preventDefault();
  if (!S.current) return;
  $("compose-error").textContent = "";
  const text = $("compose").value.trim();
  if (!text && !S.attachment) return;
  const id = S.current.interaction.id;
  $("send").disabled = true;
  try {
    let body;
    if (S.attachment) {
      const form = new FormData();
      form.append("file", S.attachment.file, S.attachment.file.name);
      const up = await api("POST", "attachments", form);
      body = { attachment_id: up.id };
      if (text) body.caption = text;
    } else {
      body = { text };
    }
    const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
    const m = await api("POST", `interactions/${id}/messages`, body, { headers: { "idempotency-key": key } });
    $("compose").value = "";
    localStorage.removeItem(draftKey(id));
    clearAttachment();
    addMessage(m);
    await loadInteractions();
  } catch (e) {
    const field = e.problem && e.problem.errors && e.problem.errors[0];
    $("compose-error").textContent = field ? `${field.field}: ${field.message}` : e.message;
  } finally {
    $("send").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// Notifications: an approved template, filled from the contact's data, blanks typed.

async function openNotify() {
  if (!S.current) return;
  $("nv").hidden = false;
  $("nv-error").textContent = "";
  S.templates = (await api("GET", "templates?status=approved")).filter((t) => t.known_to_provider !== false);
  $("nv-template").replaceChildren(el("option", { value: "", text: "Choose a template…" }),
    ...S.templates.map((t) => el("option", { value: t.id, text: `${t.name} (${t.language})` })));
  S.notify = null;
  drawNotify();
  $("nv-template").focus();
}

function closeNotify() {
  if (S.notify && S.notify.image) URL.revokeObjectURL(S.notify.image.url);
  S.notify = null;
  $("nv").hidden = true;
}

// The values the agent typed, by field key.
function typedFields() {
  const out = {};
  for (const input of document.querySelectorAll("#nv-fields input[data-key]")) {
    if (!input.readOnly && input.value.trim()) out[input.dataset.key] = input.value.trim();
  }
  return out;
}

async function chooseTemplate() {
  const id = $("nv-template").value;
  if (!id) { S.notify = null; drawNotify(); return; }
  S.notify = { template: id, rendered: null, image: null };
  await renderNotify({});
}

async function renderNotify(fields) {
  if (!S.notify) return;
  S.notify.rendered = await api("POST", `templates/${S.notify.template}/render`, { contact_id: S.current.contact.id, fields });
  drawNotify();
}

const SOURCES = { contact_data: "the contact's data", agent_data: "your profile", clock: "the clock",
  default: "the template's default", agent_input: "typed", blank: "blank: type it" };

function drawNotify() {
  const r = S.notify && S.notify.rendered;
  $("nv-drop").hidden = !(r && r.header_media === "IMAGE");
  $("nv-header").textContent = (r && r.header_text) || "";
  $("nv-body").textContent = r ? r.body : "";
  $("nv-footer").textContent = (r && r.footer) || "";
  $("nv-buttons").replaceChildren(...(r ? r.buttons : []).map((x) => el("li", { text: x.text || "", dir: "auto" })));
  const keep = typedFields();
  $("nv-fields").replaceChildren(...(r ? r.fields : []).map((f) => {
    const typed = f.source === "agent_input" || f.source === "blank";
    const input = el("input", {
      "data-key": f.key, value: typed ? (keep[f.key] || f.value || "") : (f.value || ""),
      "aria-label": `Field ${f.key}`, placeholder: f.example || "", dir: "auto",
    });
    input.readOnly = !typed;
    input.required = typed;
    if (f.source === "blank") input.classList.add("blank");
    input.addEventListener("change", () => renderNotify(typedFields()).catch((e) => { $("nv-error").textContent = e.message; }));
    return el("tr", { dataset: { key: f.key, source: f.source } },
      el("th", { text: f.key, scope: "row" }), el("td", {}, input),
      el("td", { class: "source", text: SOURCES[f.source] || f.source }));
  }));
  $("nv-send").disabled = !r;
}

function setNotifyImage(file) {
  if (!S.notify || !file) return;
  if (!/^image\/(jpeg|png)$/.test(file.type)) { $("nv-error").textContent = "The header takes a JPEG or PNG image."; return; }
  if (S.notify.image) URL.revokeObjectURL(S.notify.image.url);
  S.notify.image = { file, url: URL.createObjectURL(file) };
  $("nv-image-preview").src = S.notify.image.url;
  $("nv-image-preview").hidden = false;
}

async function sendNotify() {
  if (!S.notify || !S.notify.rendered) return;
  $("nv-error").textContent = "";
  const body = { template_id: S.notify.template, fields: typedFields() };
  try {
    if (S.notify.rendered.header_media === "IMAGE") {
      if (!S.notify.image) { $("nv-error").textContent = "Add the header image first."; return; }
      const form = new FormData();
      form.append("file", S.notify.image.file, S.notify.image.file.name);
      body.header_image_attachment_id = (await api("POST", "attachments", form)).id;
    }
    const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
    const m = await api("POST", `contacts/${S.current.contact.id}/notifications`, body, { headers: { "idempotency-key": key } });
    addMessage(m);
    closeNotify();
  } catch (e) {
    const errs = (e.problem && e.problem.errors) || [];
    $("nv-error").textContent = errs.length ? errs.map((x) => `${x.field}: ${x.message}`).join("; ") : e.message;
  }
}

// ---------------------------------------------------------------------------------------
// Communication tab

async function loadConversations() {
  const q = $("conv-search").value.trim();
  const page = await api("GET", `conversations?limit=50${q ? `&q=${encodeURIComponent(q)}` : ""}`);
  let total = 0;
  $("conv-list").replaceChildren(...page.items.map((c) => {
    total += c.unread_count;
    return el("li", {}, el("button", {
      type: "button", dataset: { contact: c.contact_id }, "aria-current": S.convSelected === c.contact_id ? "true" : "false",
      onclick: () => openConversation(c.contact_id),
    }, el("strong", { text: c.contact_name, dir: "auto" }),
    c.unread_count ? el("span", { class: "count", text: String(c.unread_count), "aria-label": `${c.unread_count} unread` }) : null,
    el("span", { class: "muted", text: ` ${messageText(c.last_message).slice(0, 60)}`, dir: "auto" })));
  }));
  $("unread-total").textContent = total ? String(total) : "";
}

async function openConversation(id) {
  S.convSelected = id;
  const c = await contact(id, true);
  $("cv-title").textContent = c.name;
  $("cv-title").dir = "auto";
  $("cv-open").hidden = false;
  $("cv-composer").hidden = false;
  const page = await api("GET", `contacts/${id}/messages?limit=50`);
  $("cv-transcript").replaceChildren(...page.items.map((m) => renderMessage(m)));
  const newest = page.items[page.items.length - 1];
  if (newest) {
    try { await api("POST", `contacts/${id}/read`, { up_to_message_id: newest.id }); } catch { /* unread stays */ }
  }
  await loadConversations();
}

async function sendFromConversation(ev) {
  ev.preventDefault();
  const text = $("cv-compose").value.trim();
  if (!text || !S.convSelected) return;
  $("cv-error").textContent = "";
  try {
    const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
    const m = await api("POST", `contacts/${S.convSelected}/messages`, { text }, { headers: { "idempotency-key": key } });
    $("cv-compose").value = "";
    $("cv-transcript").append(renderMessage(m));
  } catch (e) {
    $("cv-error").textContent = e.message;
  }
}

async function openFromConversation() {
  if (!S.convSelected) return;
  try {
    const i = await api("POST", `contacts/${S.convSelected}/interactions`, { channel: "whatsapp" });
    await loadInteractions();
    showView("interactions");
    await openInteraction(i.id);
  } catch (e) {
    banner(e.message);
  }
}

// ---------------------------------------------------------------------------------------
// Standard responses: found by name or shortcut, filled for the contact, put in the draft.

async function findResponses() {
  const q = $("sr-q").value.trim();
  const list = await api("GET", `standard-responses${q ? `?q=${encodeURIComponent(q)}` : ""}`);
  $("sr-list").replaceChildren(...list.map((r) => el("li", {}, el("button", {
    type: "button", dataset: { response: r.id }, onclick: () => useResponse(r.id),
  }, el("strong", { text: r.name, dir: "auto" }), el("span", { class: "muted", text: r.shortcut ? ` ${r.shortcut}` : "" })))));
  if (list.length === 0) $("sr-list").replaceChildren(el("li", { class: "muted", text: "No response matches." }));
}

async function useResponse(id) {
  if (!S.current) return;
  const r = await api("POST", `standard-responses/${id}/render`, { contact_id: S.current.contact.id, fields: {} });
  const t = $("compose");
  t.value = t.value ? `${t.value} ${r.body}` : r.body;
  $("compose-error").textContent = r.blank && r.blank.length ? `Fill in: ${r.blank.map((k) => `{{${k}}}`).join(", ")}` : "";
  $("sr").hidden = true;
  $("sr-toggle").setAttribute("aria-expanded", "false");
  saveDraft();
  t.focus();
}

// ---------------------------------------------------------------------------------------
// Directory: a contact's channels with their state, numbers, data and history, and the
// WhatsApp channel actions.

const IDENTITY_STATES = {
  unverified: "not verified", connect_requested: "connect requested", connected: "connected",
  declined: "declined", invalid: "invalid", opted_out: "opted out",
};

async function loadDirectory() {
  const q = $("dir-search").value.trim();
  const page = await api("GET", `contacts?limit=50${q ? `&q=${encodeURIComponent(q)}` : ""}`);
  $("dir-list").replaceChildren(...page.items.map((c) => el("li", {}, el("button", {
    type: "button", dataset: { contact: c.id }, "aria-current": S.dirSelected === c.id ? "true" : "false",
    onclick: () => openContact(c.id),
  }, el("span", { text: c.name, dir: "auto" })))));
}

async function openContact(id) {
  S.dirSelected = id;
  $("dir-error").textContent = "";
  $("dir-verdict").textContent = "";
  const c = await contact(id, true);
  $("dir-detail").hidden = false;
  $("dir-name").value = c.name;
  drawIdentities(c);
  $("dir-attrs").replaceChildren(...Object.entries(c.attributes || {}).map(([k, v]) => el("tr", { dataset: { key: k } },
    el("th", { text: k, scope: "row" }), el("td", { text: typeof v === "string" ? v : JSON.stringify(v), dir: "auto" }))));
  const history = await api("GET", `contacts/${id}/interactions`);
  $("dir-history").replaceChildren(...history.map((i) => el("tr", {},
    el("td", { text: time(i.started_at) }), el("td", { text: i.channel }), el("td", { text: i.state }),
    el("td", { text: i.handle_seconds != null ? `${Math.round(i.handle_seconds)} s` : "" }),
    el("td", { text: i.disposition || "" }))));
}

function drawIdentities(c) {
  $("dir-identities").replaceChildren(...(c.identities || []).map((x) => {
    const warn = x.status === "invalid" || x.address_warning;
    const why = x.status === "invalid" && x.last_error ? (x.last_error.title || x.last_error.message || x.last_error.code || "") : "";
    const li = el("li", { dataset: { identity: x.id, channel: x.channel } },
      el("strong", { text: x.channel }), el("span", { text: x.address, dir: "ltr" }),
      el("span", { class: "status", dataset: { status: x.status }, text: IDENTITY_STATES[x.status] || x.status }),
      warn ? el("span", { class: "warn", role: "img", "aria-label": "warning", title: why || x.address_warning || "", text: "⚠" }) : null,
      why ? el("span", { class: "why warn", text: String(why) }) : null,
      x.address_warning ? el("span", { class: "warn", text: x.address_warning }) : null);
    if (x.channel === "whatsapp") {
      // The channel action menu.
      li.append(el("details", { class: "menu" },
        el("summary", { text: "Actions", "aria-label": `Actions for ${x.address}` }),
        el("div", { class: "menu-items" },
          el("button", { type: "button", class: "connect", text: "Connect WhatsApp channel", onclick: () => identityAction(x.id, "connect") }),
          el("button", { type: "button", class: "validate", text: "Validate WhatsApp channel", onclick: () => identityAction(x.id, "validate") }),
          el("button", { type: "button", class: "create", text: "Create WhatsApp interaction", onclick: () => createFrom(c.id) }))));
    }
    return li;
  }));
}

async function identityAction(identity, what) {
  const id = S.dirSelected;
  $("dir-error").textContent = "";
  try {
    const r = await api("POST", `contacts/${id}/identities/${identity}/${what}`);
    $("dir-verdict").textContent = what === "validate"
      ? `${IDENTITY_STATES[r.status] || r.status}: ${r.reason}${r.advice ? `. ${r.advice}` : ""}`
      : "Connect request sent: the contact is asked to answer Yes or No.";
    drawIdentities(await contact(id, true));
  } catch (e) {
    $("dir-error").textContent = e.message;
  }
}

async function createFrom(contactId) {
  try {
    const i = await api("POST", `contacts/${contactId}/interactions`, { channel: "whatsapp" });
    await loadInteractions();
    showView("interactions");
    await openInteraction(i.id);
  } catch (e) {
    $("dir-error").textContent = e.message;
  }
}

async function saveName(ev) {
  ev.preventDefault();
  try {
    await api("PATCH", `contacts/${S.dirSelected}`, { name: $("dir-name").value });
    await openContact(S.dirSelected);
    await loadDirectory();
  } catch (e) { $("dir-error").textContent = e.message; }
}

async function saveAttr(ev) {
  ev.preventDefault();
  const key = $("dir-attr-key").value.trim();
  const value = $("dir-attr-value").value;
  try {
    await api("PATCH", `contacts/${S.dirSelected}`, { attributes: { [key]: value === "" ? null : value } });
    $("dir-attr-key").value = "";
    $("dir-attr-value").value = "";
    await openContact(S.dirSelected);
  } catch (e) { $("dir-error").textContent = e.message; }
}

async function addNumber(ev) {
  ev.preventDefault();
  try {
    await api("POST", `contacts/${S.dirSelected}/identities`, { channel: $("dir-add-channel").value, address: $("dir-add-address").value });
    $("dir-add-address").value = "";
    await openContact(S.dirSelected);
  } catch (e) {
    const field = e.problem && e.problem.errors && e.problem.errors[0];
    $("dir-error").textContent = field ? `${field.field}: ${field.message}` : e.message;
  }
}

// ---------------------------------------------------------------------------------------
// Supervisor

async function loadAgents() {
  S.agents = await api("GET", "agents");
  renderAgents();
  await loadDepths();
  await loadKpis();
}

async function loadDepths() {
  const counts = new Map(S.queues.map((q) => [q.id, { queued: 0, offered: 0, active: 0 }]));
  const none = { queued: 0, offered: 0, active: 0 };
  for (const state of ["queued", "offered", "active"]) {
    for (const i of await api("GET", `interactions?state=${state}`)) {
      const c = counts.get(i.queue_id) || none;
      c[state] += 1;
    }
  }
  const rows = S.queues.map((q) => [q.name, counts.get(q.id)]);
  if (none.queued + none.offered + none.active) rows.push(["(no queue)", none]);
  $("queue-depths").replaceChildren(...rows.map(([name, c]) => el("tr", {},
    el("td", { text: name, dir: "auto" }), el("td", { class: "queued", text: String(c.queued) }),
    el("td", { text: String(c.offered) }), el("td", { text: String(c.active) }))));
}

const secs = (v) => (v == null ? "–" : v >= 60 ? `${Math.floor(v / 60)} min ${Math.round(v % 60)} s` : `${Math.round(v)} s`);

async function loadKpis() {
  const days = Number($("kpi-period").value || "1");
  const to = new Date();
  const from = new Date();
  from.setHours(0, 0, 0, 0);
  from.setDate(from.getDate() - (days - 1));
  const rows = await api("GET", `reports/agents?from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(new Date(to.getTime() + 1000).toISOString())}`);
  $("kpis").replaceChildren(...rows.map((r) => el("tr", { dataset: { agent: r.agent_id } },
    el("td", { text: r.display_name, dir: "auto" }), el("td", { class: "handled", text: String(r.interactions_handled) }),
    el("td", { text: secs(r.avg_handle_secs) }), el("td", { text: secs(r.avg_first_response_secs) }),
    el("td", { text: secs(r.total_handle_secs) }), el("td", { text: String(r.offers_refused) }))));
}

function renderAgents() {
  $("agents").replaceChildren(...S.agents.map((a) => el("tr", { dataset: { agent: a.user_id } },
    el("td", { text: a.display_name, dir: "auto" }),
    el("td", { class: "agent-state", text: STATE_LABELS[a.state] || a.state }),
    el("td", { text: a.reason ? reasonLabel(a.reason) : "" }),
    el("td", { text: `${a.load} / ${a.capacity}` }),
    el("td", { text: shortTime(a.since) }))));
}

// ---------------------------------------------------------------------------------------
// Event stream: resume from the last event seen; nothing twice, nothing missed.

function connect() {
  if (!S.session) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const after = S.lastEvent !== null ? `&after=${S.lastEvent}` : "";
  const ws = new WebSocket(`${proto}://${location.host}${API}/events?access_token=${encodeURIComponent(S.session.access_token)}${after}`);
  S.socket = ws;
  const resuming = S.lastEvent !== null;
  ws.onopen = () => {
    S.socketRetry = 0;
    $("conn").textContent = "live";
    $("conn").dataset.live = "true";
    // The server marks Ready-without-a-stream; read state again now the stream is open.
    loadMyState().catch(() => {});
    // A stream opened without `after` starts from now: read what changed before it
    // opened (after a resume, the stream itself replays it).
    if (!resuming) {
      loadInteractions().catch(() => {});
      if (!$("view-supervisor").hidden) loadAgents().catch(() => {});
    }
  };
  ws.onmessage = (msg) => {
    let e;
    try { e = JSON.parse(msg.data); } catch { return; }
    if (typeof e.id === "number") {
      if (S.lastEvent !== null && e.id <= S.lastEvent) return;
      S.lastEvent = e.id;
      sessionStorage.setItem("parley.lastEvent", String(e.id));
    }
    handleEvent(e).catch((err) => console.warn("event", e.kind, err));
  };
  ws.onclose = (ev) => {
    if (S.socket !== ws) return;
    S.socket = null;
    $("conn").textContent = "reconnecting…";
    $("conn").dataset.live = "false";
    if (ev.code === 4002) { S.lastEvent = null; sessionStorage.removeItem("parley.lastEvent"); resync().catch(() => {}); }
    const wait = Math.min(10000, 500 * 2 ** S.socketRetry++);
    setTimeout(async () => {
      if (!S.session) return;
      // 4401: the socket's credentials lapsed (a refreshed token already moved the socket,
      // so this is an expired or revoked session): refresh, or sign in again.
      if (ev.code === 4401) {
        try { await refresh(); } catch { signedOut("Your session ended: sign in again."); return; }
      }
      connect();
    }, wait);
  };
}

async function resync() {
  await loadMyState();
  await loadInteractions();
  if (S.current) await loadTranscript();
}

async function handleEvent(e) {
  const p = e.payload || {};
  switch (e.kind) {
    case "interaction.offered":
      await loadMyState();
      if (!$("view-supervisor").hidden) await loadDepths();
      notify("New interaction", "A contact is waiting for you");
      break;
    case "interaction.offer_revoked":
      S.offers.delete(p.interaction_id);
      await renderOffers();
      break;
    case "interaction.accepted": case "interaction.ended": case "interaction.done":
    case "interaction.resumed": case "interaction.transferred": case "interaction.created":
      await loadMyState();
      await loadInteractions();
      if (!$("view-supervisor").hidden) await loadDepths();
      break;
    case "message.created":
      if (p.message) {
        addMessage(p.message);
        if (p.message.direction === "inbound") {
          notify("New message", messageText(p.message));
          if (S.current && p.message.contact_id === S.current.contact.id) {
            S.current.contact = await contact(p.message.contact_id, true);
            renderHead();
          }
        }
        if (!$("view-communication").hidden) {
          if (p.message.contact_id === S.convSelected && !document.querySelector(`#cv-transcript [data-id="${p.message.id}"]`)) {
            $("cv-transcript").append(renderMessage(p.message));
            // Seen as it arrives: the open conversation stays read.
            try { await api("POST", `contacts/${S.convSelected}/read`, { up_to_message_id: p.message.id }); } catch { /* unread shows */ }
          }
          await loadConversations();
        }
      }
      break;
    case "message.status":
    case "message.updated":
      updateStatus(p);
      // A failure may close the reply window or mark the number invalid.
      if (p.status === "failed" && S.current && p.contact_id === S.current.contact.id) {
        S.current.contact = await contact(p.contact_id, true);
        renderHead();
      }
      break;
    case "agent.state":
      if (p.agent) {
        if (p.agent.user_id === S.me.id) showState(p.agent);
        const i = S.agents.findIndex((a) => a.user_id === p.agent.user_id);
        if (i >= 0) S.agents[i] = p.agent; else S.agents.push(p.agent);
        renderAgents();
      }
      break;
    case "conversation.unread":
      if (!$("view-communication").hidden) await loadConversations();
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------
// Views and start-up

const isSupervisor = () => S.me && (S.me.role === "supervisor" || S.me.role === "admin");

function showView(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.setAttribute("aria-pressed", b.dataset.view === name ? "true" : "false");
  for (const v of ["interactions", "communication", "directory", "supervisor"]) $(`view-${v}`).hidden = v !== name;
  if (name === "directory") loadDirectory().catch((e) => banner(e.message));
  if (name === "communication") loadConversations().catch((e) => banner(e.message));
  if (name === "supervisor") loadAgents().catch((e) => banner(e.message));
}

async function start() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  scheduleRefresh();
  const me = await api("GET", "me");
  if (S.me && S.me.id !== me.id) {
    // Someone else signs in on this page: nothing of the last user's stays on it.
    closeInteraction();
    S.contacts.clear();
    S.offers.clear();
    S.interactions = [];
    S.convSelected = null;
    S.dirSelected = null;
    S.lastEvent = null;
    sessionStorage.removeItem("parley.lastEvent");
    for (const id of ["interaction-list", "conv-list", "cv-transcript", "dir-list", "agents", "kpis", "queue-depths", "offers"]) $(id).replaceChildren();
    $("cv-title").textContent = "";
    $("dir-detail").hidden = true;
    showView("interactions");
  }
  S.me = me;
  $("me-name").textContent = S.me.display_name;
  $("tab-supervisor").hidden = !isSupervisor();
  try { S.reasons = await api("GET", "not-ready-reasons"); } catch { S.reasons = []; }
  try { S.queues = await api("GET", "queues"); } catch { S.queues = []; }
  fillStateSelect();
  await loadMyState();
  await loadInteractions();
  if (S.interactions.length && !S.current) await openInteraction(S.interactions[0].id);
  connect();
}

function wire() {
  $("login-form").addEventListener("submit", (ev) => login(ev).catch((e) => { $("login-error").textContent = e.message; }));
  $("logout").addEventListener("click", logout);
  $("state-select").addEventListener("change", setState);
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showView(b.dataset.view));
  $("iv-end").addEventListener("click", () => act("end"));
  $("iv-done").addEventListener("click", () => act("done", $("iv-wrapup").value ? { disposition: $("iv-wrapup").value } : {}));
  $("iv-transfer-go").addEventListener("click", () => {
    const v = $("iv-transfer").value;
    if (!v) return;
    const [kind, id] = v.split(":");
    act("transfer", kind === "agent" ? { agent_id: id } : { queue_id: id });
  });
  $("load-earlier").addEventListener("click", () => loadEarlier().catch((e) => banner(e.message)));
  $("search-form").addEventListener("submit", (ev) => search(ev).catch((e) => banner(e.message)));
  $("media-filter").addEventListener("change", () => loadTranscript().catch((e) => banner(e.message)));
  $("composer").addEventListener("submit", send);
  $("compose").addEventListener("input", saveDraft);
  $("compose").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $("composer").requestSubmit(); }
  });
  $("attach").addEventListener("change", () => setAttachment($("attach").files[0]));
  $("preview-clear").addEventListener("click", clearAttachment);
  const drop = $("composer");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); $("drop").classList.add("over"); });
  drop.addEventListener("dragleave", () => $("drop").classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    $("drop").classList.remove("over");
    if (ev.dataTransfer.files[0]) setAttachment(ev.dataTransfer.files[0]);
  });
  const pad = $("emoji");
  pad.append(...EMOJI.map((e) => el("button", { type: "button", text: e, "aria-label": `Insert ${e}`, onclick: () => {
    const t = $("compose");
    const at = t.selectionStart ?? t.value.length;
    t.value = t.value.slice(0, at) + e + t.value.slice(t.selectionEnd ?? at);
    t.focus();
    t.selectionStart = t.selectionEnd = at + e.length;
    saveDraft();
  } })));
  $("emoji-toggle").addEventListener("click", () => {
    pad.hidden = !pad.hidden;
    $("emoji-toggle").setAttribute("aria-expanded", pad.hidden ? "false" : "true");
  });
  $("iv-notify").addEventListener("click", () => openNotify().catch((e) => banner(e.message)));
  $("window-notify").addEventListener("click", () => openNotify().catch((e) => banner(e.message)));
  $("nv-close").addEventListener("click", closeNotify);
  $("nv-template").addEventListener("change", () => chooseTemplate().catch((e) => { $("nv-error").textContent = e.message; }));
  $("nv-image").addEventListener("change", () => setNotifyImage($("nv-image").files[0]));
  $("nv-drop").addEventListener("dragover", (ev) => { ev.preventDefault(); $("nv-drop").classList.add("over"); });
  $("nv-drop").addEventListener("dragleave", () => $("nv-drop").classList.remove("over"));
  $("nv-drop").addEventListener("drop", (ev) => {
    ev.preventDefault();
    $("nv-drop").classList.remove("over");
    setNotifyImage(ev.dataTransfer.files[0]);
  });
  $("nv-send").addEventListener("click", () => sendNotify());
  $("sr-toggle").addEventListener("click", () => {
    const pad2 = $("sr");
    pad2.hidden = !pad2.hidden;
    $("sr-toggle").setAttribute("aria-expanded", pad2.hidden ? "false" : "true");
    if (!pad2.hidden) { findResponses().catch((e) => banner(e.message)); $("sr-q").focus(); }
  });
  $("sr-q").addEventListener("input", () => findResponses().catch(() => {}));
  $("sr-q").addEventListener("keydown", (ev) => { if (ev.key === "Enter") ev.preventDefault(); });
  $("dir-search").addEventListener("input", () => loadDirectory().catch(() => {}));
  $("dir-name-form").addEventListener("submit", saveName);
  $("dir-attr-form").addEventListener("submit", saveAttr);
  $("dir-add").addEventListener("submit", addNumber);
  $("kpi-period").addEventListener("change", () => loadKpis().catch((e) => banner(e.message)));
  $("cv-composer").addEventListener("submit", sendFromConversation);
  $("conv-search").addEventListener("input", () => loadConversations().catch(() => {}));
  $("cv-open").addEventListener("click", openFromConversation);
  setInterval(tickCountdowns, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  loadSession();
  if (S.session) start().catch(() => signedOut("")); else signedOut("");
});
