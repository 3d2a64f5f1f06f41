// trio_stock dashboard: one WebSocket (seed 003's /api/v2/realtime/ws/prices, which takes
// Korean codes and US tickers alike and pushes the merged state), plus REST polling of
// /api/v2/realtime/status (quota in use) and /api/v2/realtime/health (provider states).
// Plain modern JS, no build step, no external resources: it must work offline.
"use strict";

const WS_PATH = "/api/v2/realtime/ws/prices";
const STATUS_URL = "/api/v2/realtime/status";
const HEALTH_URL = "/api/v2/realtime/health";
const STORAGE_KEY = "trio_stock.watchlist";
// A first visit shows a few well-known symbols of both markets.
const DEFAULT_WATCHLIST = ["005930", "000660", "AAPL", "MSFT"];
const MAX_WATCHLIST = 50; // the server allows 200 per client; a page of cards should stay usable
// The server's own rules (trio_stock/symbols.py): a Korean code is exactly six digits; a US
// ticker is 1-10 of A-Z 0-9 . - with at least one letter, so "12345" is reported, not routed.
const KOREAN_CODE = /^\d{6}$/;
const US_TICKER = /^(?=[A-Z0-9.-]*[A-Z])[A-Z0-9.-]{1,10}$/;

// Reconnect policy, as both documents' clients: exponential backoff with jitter, no give-up.
const BACKOFF_INITIAL_MS = 500;
const BACKOFF_FACTOR = 2;
const BACKOFF_MAX_MS = 8000;
// An application-level ping finds a half-open connection that the browser would not notice
// (seed 000/003 both define {"action": "ping"} -> {"type": "pong"}).
const PING_EVERY_MS = 15000;
const PONG_TIMEOUT_MS = 10000;
const POLL_EVERY_MS = 5000;
const SPARK_POINTS = 60;
const MESSAGE_TTL_MS = 20000;
const MAX_MESSAGES = 4;
// With auth on (TRIO_STOCK_AUTH=jwt) the page needs a token: from the URL's fragment
// (#access_token=..., never sent to a server or written to its logs) or typed into the
// token form. It is kept in this tab's sessionStorage only and sent in band.
const TOKEN_KEY = "trio_stock.token";
const RENEW_WARNING_MS = 60000; // ask for a new token this long before the current expires
// Close codes after which retrying with the same token cannot help (README, close codes).
const AUTH_CLOSE = { 4001: "the token is missing, invalid or expired", 4003: "the token is not entitled to these prices", 4008: "too many connections for this token" };

const MARKET_CONVENTION = {
  KR: { label: "KR", zone: "Asia/Seoul", zoneLabel: "KST" },
  US: { label: "US", zone: "America/New_York", zoneLabel: "ET" },
};
const wonFormat = new Intl.NumberFormat("ko-KR", { maximumFractionDigits: 0 });
const dollarFormat = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const percentFormat = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const timeFormats = {};

// ---------------------------------------------------------------------------- symbols

/** The canonical symbol and its market, or null when it is neither kind. */
function parseSymbol(raw) {
  const text = String(raw).trim();
  if (KOREAN_CODE.test(text)) return { symbol: text, market: "KR" };
  const upper = text.toUpperCase();
  if (US_TICKER.test(upper)) return { symbol: upper, market: "US" };
  return null;
}

/** Python's repr of a list of strings, so the page quotes seed 000's warning exactly. */
function pyList(items) {
  return "[" + items.map((s) => "'" + s.replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'").join(", ") + "]";
}

// ---------------------------------------------------------------------------- formatting

function formatPrice(value, market) {
  if (value == null) return "—";
  return market === "KR" ? "₩" + wonFormat.format(value) : "$" + dollarFormat.format(value);
}

function formatChange(change, percent, market) {
  if (change == null) return "no previous close yet";
  const sign = change > 0 ? "+" : change < 0 ? "−" : "";
  const amount = formatPrice(Math.abs(change), market);
  const pct = percent == null ? "" : ` (${sign}${percentFormat.format(Math.abs(percent))}%)`;
  return `${sign}${amount}${pct}`;
}

function formatTime(ms, market) {
  if (!ms) return "—";
  const convention = MARKET_CONVENTION[market];
  timeFormats[market] ??= new Intl.DateTimeFormat("en-GB", {
    timeZone: convention.zone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  return `${timeFormats[market].format(new Date(ms))} ${convention.zoneLabel}`;
}

// ---------------------------------------------------------------------------- watchlist

function loadWatchlist() {
  let stored = null;
  try {
    stored = JSON.parse(localStorage.getItem(STORAGE_KEY));
  } catch {
    stored = null; // corrupt storage: start again from the defaults
  }
  if (!Array.isArray(stored)) return [...DEFAULT_WATCHLIST];
  const seen = new Set();
  for (const item of stored) {
    const parsed = typeof item === "string" ? parseSymbol(item) : null;
    if (parsed && seen.size < MAX_WATCHLIST) seen.add(parsed.symbol);
  }
  return [...seen];
}

function saveWatchlist() {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify([...cards.keys()]));
  } catch {
    // Storage full or disabled (private mode): the page still works, it just won't remember.
  }
}

// ---------------------------------------------------------------------------- messages

const messagesEl = document.getElementById("messages");

/**
 * Show a readable message in the page (never alert()). `original` is the server's or the
 * documents' own wording, shown beneath; a message with the same key replaces the older one.
 */
function showMessage(kind, text, { original = null, key = text } = {}) {
  for (const old of messagesEl.querySelectorAll(".message")) {
    if (old.dataset.key === key) old.remove();
  }
  const item = document.createElement("p");
  item.className = "message";
  item.dataset.kind = kind;
  item.dataset.key = key;
  item.setAttribute("role", kind === "error" ? "alert" : "status");
  const body = document.createElement("span");
  body.textContent = text;
  if (original) {
    const small = document.createElement("span");
    small.className = "original";
    small.lang = /[\uac00-\ud7a3]/.test(original) ? "ko" : "en";
    small.textContent = original;
    body.append(small);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Dismiss";
  close.setAttribute("aria-label", "Dismiss message");
  close.addEventListener("click", () => item.remove());
  item.append(body, close);
  messagesEl.prepend(item);
  while (messagesEl.children.length > MAX_MESSAGES) messagesEl.lastElementChild.remove();
  setTimeout(() => item.remove(), MESSAGE_TTL_MS);
}

// ---------------------------------------------------------------------------- cards

const cardsEl = document.getElementById("cards");
const emptyEl = document.getElementById("empty");
const template = document.getElementById("card-template");
/** symbol -> card: its elements, last state, price history; insertion order = page order. */
const cards = new Map();
const dirty = new Set();
let frameRequested = false;

function addCard(symbol, market) {
  const el = template.content.firstElementChild.cloneNode(true);
  el.dataset.symbol = symbol;
  el.dataset.market = market;
  el.querySelector(".symbol").textContent = symbol;
  el.querySelector(".market").textContent = MARKET_CONVENTION[market].label;
  const remove = el.querySelector(".remove");
  remove.setAttribute("aria-label", `Remove ${symbol}`);
  remove.addEventListener("click", () => removeSymbol(symbol));
  el.setAttribute("aria-label", symbol);
  const card = {
    symbol, market, el, state: null, previousPrice: null, history: [], flash: null, tradeTime: null,
    price: el.querySelector(".price"), change: el.querySelector(".change"),
    line: el.querySelector("polyline"), bid: el.querySelector(".bid"),
    ask: el.querySelector(".ask"), time: el.querySelector(".time"),
  };
  cards.set(symbol, card);
  cardsEl.append(el);
  emptyEl.hidden = true;
  return card;
}

function dropCard(symbol) {
  const card = cards.get(symbol);
  if (!card) return;
  card.el.remove();
  cards.delete(symbol);
  dirty.delete(symbol);
  emptyEl.hidden = cards.size > 0;
}

function markFailed(symbol, reason) {
  const card = cards.get(symbol);
  if (!card) return;
  card.el.dataset.error = reason;
  card.change.textContent = `Not subscribed: ${reason}`;
}

/** Take a price_update (the merged state after a tick) and schedule a redraw. */
function applyUpdate(message) {
  const card = cards.get(message.symbol);
  if (!card) return; // an update that crossed our unsubscribe
  delete card.el.dataset.error;
  const price = message.last_price;
  if (price != null && price !== card.previousPrice) {
    if (card.previousPrice != null) card.flash = price > card.previousPrice ? "flash-up" : "flash-down";
    card.previousPrice = price;
    card.history.push(price);
    if (card.history.length > SPARK_POINTS) card.history.shift();
  }
  // price_update carries the merged state after any tick; only a trade (data_type "T",
  // seed 003) moves the "last trade" time, a quote (Q) only moves bid/ask.
  if (message.data_type === "T") card.tradeTime = message.timestamp;
  card.state = message;
  dirty.add(card.symbol);
  // Updates can arrive far faster than the screen refreshes: draw once per frame.
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(renderDirty);
  }
}

function renderDirty() {
  frameRequested = false;
  for (const symbol of dirty) {
    const card = cards.get(symbol);
    if (card) renderCard(card);
  }
  dirty.clear();
}

function renderCard(card) {
  const s = card.state;
  const market = card.market;
  card.price.textContent = formatPrice(s.last_price, market);
  card.change.textContent = formatChange(s.change, s.change_percent, market);
  card.el.dataset.direction = s.change > 0 ? "up" : s.change < 0 ? "down" : "flat";
  card.bid.textContent = formatPrice(s.bid_price, market);
  card.ask.textContent = formatPrice(s.ask_price, market);
  card.time.textContent = formatTime(card.tradeTime, market);
  if (card.flash) {
    card.price.classList.remove("flash-up", "flash-down");
    void card.price.offsetWidth; // restart the CSS animation on every change
    card.price.classList.add(card.flash);
    card.flash = null;
  }
  card.line.setAttribute("points", sparkPoints(card.history));
}

/** The history as SVG polyline points in a 100 x 30 box, scaled to its own min..max. */
function sparkPoints(history) {
  if (history.length < 2) return "";
  const low = Math.min(...history);
  const high = Math.max(...history);
  const span = high - low || 1;
  const step = 100 / (SPARK_POINTS - 1);
  const offset = SPARK_POINTS - history.length; // new points enter from the right
  return history
    .map((v, i) => `${((offset + i) * step).toFixed(2)},${(28 - ((v - low) / span) * 26).toFixed(2)}`)
    .join(" ");
}

// ---------------------------------------------------------------------------- the socket

const connectionEl = document.getElementById("connection");
const connectionText = document.getElementById("connection-text");

function setConnection(state, text) {
  connectionEl.dataset.state = state;
  connectionText.textContent = text;
}

/**
 * One WebSocket that reconnects by itself (exponential backoff with jitter) and, on every
 * open, subscribes again to every symbol on the watchlist: the server keeps no state for a
 * client that went away, so the page is the source of truth.
 */
class PriceSocket {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.attempt = 0; // failed attempts since the last successful open
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (!navigator.onLine) {
      setConnection("disconnected", "disconnected (browser offline)");
      return; // the "online" event calls connect() again
    }
    setConnection(this.attempt ? "reconnecting" : "connecting",
      this.attempt ? `reconnecting (attempt ${this.attempt})…` : "connecting…");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => this.onOpen(ws));
    ws.addEventListener("message", (event) => this.onMessage(ws, event));
    ws.addEventListener("close", (event) => this.onClose(ws, event));
    // An "error" is always followed by "close"; the retry is scheduled there.
  }

  onOpen(ws) {
    if (ws !== this.ws) return;
    this.attempt = 0;
    setConnection("connected", "connected");
    const token = tokenStore.get();
    if (token) this.send({ action: "auth", token }); // first: the server reads in order
    const symbols = [...cards.keys()];
    if (symbols.length) this.send({ action: "subscribe", symbols });
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
    refreshServerState();
  }

  onMessage(ws, event) {
    if (ws !== this.ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not ours to crash on; the server only sends JSON
    }
    handleMessage(message);
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    markHealthUnknown();
    if (event && AUTH_CLOSE[event.code]) {
      // Retrying with the same token would only be refused again: ask for a new one.
      setConnection("disconnected", `disconnected: ${AUTH_CLOSE[event.code]}`);
      tokenStore.ask(event.reason || AUTH_CLOSE[event.code]);
      return;
    }
    this.attempt += 1;
    // Full backoff doubles per attempt up to the cap; jitter (50-100 % of it) keeps many
    // pages from reconnecting in lockstep after a server restart.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * BACKOFF_FACTOR ** (this.attempt - 1));
    const delay = Math.round(ceiling * (0.5 + Math.random() * 0.5));
    setConnection("reconnecting",
      `reconnecting (attempt ${this.attempt}) in ${(delay / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  ping() {
    if (!this.send({ action: "ping" })) return;
    clearTimeout(this.pongTimer);
    this.pongTimer = setTimeout(() => this.ws && this.ws.close(), PONG_TIMEOUT_MS);
  }

  pong() {
    clearTimeout(this.pongTimer);
  }

  /** Send when open; while closed, drop it: the resubscribe on open covers subscriptions. */
  send(payload) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(payload));
    return true;
  }
}

const socket = new PriceSocket(
  `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${WS_PATH}`,
);

function handleMessage(message) {
  switch (message.type) {
    case "price_update":
      applyUpdate(message);
      break;
    case "subscription":
      for (const symbol of message.failed ?? []) markFailed(symbol, "see the message above");
      refreshServerState();
      break;
    case "error":
      showServerError(String(message.message ?? "unknown error"));
      break;
    case "pong":
      socket.pong();
      break;
    case "auth":
      tokenStore.accepted(Number(message.expires_at));
      break;
    default:
      break; // "connected" greeting, "subscriptions": nothing to do
  }
}

/**
 * Turn the server's error text into a readable message. Subscription failures read
 * "Could not subscribe: SYM (reason: detail), ..." (trio_stock/endpoints/prices.py); quota
 * failures are shown with seed 000's own wording, "N개 종목 구독 실패".
 */
function showServerError(text) {
  const failures = [...text.matchAll(/([A-Z0-9.-]+) \((\w+)(?::[^)]*)?\)/g)].map((m) => ({
    symbol: m[1], reason: m[2],
  }));
  if (!text.startsWith("Could not subscribe") || failures.length === 0) {
    showMessage("error", `Server: ${text}`);
    return;
  }
  for (const { symbol, reason } of failures) {
    const market = parseSymbol(symbol)?.market ?? "US";
    if (reason === "quota") {
      const quota = lastQuota[market];
      const limit = quota ? quota.quota : "?";
      const name = market === "KR" ? "Korean" : "US";
      markFailed(symbol, `${name} quota full`);
      showMessage(
        "error",
        `${symbol}: the ${name} subscription quota is full (${limit} symbols). ` +
          "Remove a symbol to make room, then add it again.",
        { original: market === "KR" ? `${limit}개 종목 구독 실패` : text, key: `quota-${market}` },
      );
    } else if (reason === "invalid") {
      markFailed(symbol, "invalid symbol");
      showInvalid(symbol);
    } else {
      markFailed(symbol, reason);
      showMessage("error", `${symbol} could not be subscribed (${reason}).`, { original: text });
    }
  }
}

/** Seed 000's invalid-code warning, "유효하지 않은 종목 코드: [...]", with an explanation. */
function showInvalid(raw) {
  showMessage(
    "warning",
    `“${raw}” is not a 6-digit Korean code or a US ticker.`,
    { original: `유효하지 않은 종목 코드: ${pyList([raw])}`, key: "invalid" },
  );
}

// ---------------------------------------------------------------------------- add / remove

const form = document.getElementById("add-form");
const input = document.getElementById("symbol-input");

function addSymbol(raw) {
  const text = raw.trim();
  if (!text) {
    input.setAttribute("aria-invalid", "true");
    showMessage("warning", "Type a 6-digit Korean code or a US ticker first.", { key: "invalid" });
    return false;
  }
  const parsed = parseSymbol(text);
  if (!parsed) {
    input.setAttribute("aria-invalid", "true");
    showInvalid(text.slice(0, 32));
    return false;
  }
  if (cards.has(parsed.symbol)) {
    showMessage("info", `${parsed.symbol} is already on the watchlist.`, { key: "duplicate" });
    cards.get(parsed.symbol).el.querySelector(".remove").focus();
    return false;
  }
  if (cards.size >= MAX_WATCHLIST) {
    showMessage("warning", `The watchlist holds at most ${MAX_WATCHLIST} symbols.`, { key: "full" });
    return false;
  }
  input.removeAttribute("aria-invalid");
  addCard(parsed.symbol, parsed.market);
  saveWatchlist();
  socket.send({ action: "subscribe", symbols: [parsed.symbol] });
  return true;
}

function removeSymbol(symbol) {
  const card = cards.get(symbol);
  if (!card) return;
  // Keep keyboard focus in the list: move it to the next card's remove button, or the input.
  const next = card.el.nextElementSibling ?? card.el.previousElementSibling;
  dropCard(symbol);
  saveWatchlist();
  socket.send({ action: "unsubscribe", symbols: [symbol] });
  (next ? next.querySelector(".remove") : input).focus();
  refreshServerState();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (addSymbol(input.value)) input.value = "";
  input.focus();
});
input.addEventListener("input", () => input.removeAttribute("aria-invalid"));

// ---------------------------------------------------------------------------- quota and health

const quotaKr = document.getElementById("quota-kr");
const quotaKrMeter = document.getElementById("quota-kr-meter");
const quotaUs = document.getElementById("quota-us");
const healthEl = document.getElementById("health");
/** market -> {used, quota} from the last /status; the quota message quotes the limit. */
const lastQuota = {};
let refreshQueued = false;

/** Fetch /status and /health now (coalesced), e.g. after a subscription changed. */
function refreshServerState() {
  if (refreshQueued) return;
  refreshQueued = true;
  setTimeout(() => {
    refreshQueued = false;
    pollServer();
  }, 150);
}

async function pollServer() {
  // While the socket is down the server is most likely down too: don't fill the console
  // with failed fetches; the reconnect will trigger a refresh.
  if (!socket.open) return;
  try {
    const [status, health] = await Promise.all([getJson(STATUS_URL), getJson(HEALTH_URL)]);
    renderQuota(status);
    renderHealth(health);
  } catch {
    markHealthUnknown();
  }
}

async function getJson(url) {
  const token = tokenStore.get();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(url, { cache: "no-store", headers });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function renderQuota(status) {
  for (const usage of status.upstream ?? []) lastQuota[usage.market] = usage;
  const kr = lastQuota.KR;
  const us = lastQuota.US;
  if (kr) {
    quotaKr.textContent = `${kr.used} / ${kr.quota} Korean symbols in use`;
    quotaKrMeter.max = kr.quota;
    quotaKrMeter.value = kr.used;
    quotaKrMeter.high = kr.quota * 0.8;
  }
  if (us) quotaUs.textContent = `${us.used} / ${us.quota} US symbols in use`;
}

const STATE_TEXT = {
  starting: "starting",
  connected: "connected",
  connecting: "connecting",
  backing_off: "reconnecting",
  auth_failed: "auth failed",
  stopped: "stopped",
};

function renderHealth(health) {
  healthEl.replaceChildren();
  for (const p of health.providers ?? []) {
    const item = document.createElement("li");
    item.dataset.state = p.state;
    // "simulated" is the server's word for a market without credentials (health.simulated).
    const source = p.live ? `live ${String(p.kind).toUpperCase()}` : "simulated";
    let text = `${p.market} · ${source} · ${STATE_TEXT[p.state] ?? p.state}`;
    if (p.state !== "connected" && p.reconnect_attempts) text += ` (${p.reconnect_attempts} attempts)`;
    item.textContent = text;
    // Why a provider is unhealthy, in view (not only on hover): e.g. "approval request failed".
    if (p.state !== "connected" && p.last_error) item.textContent += ` — ${p.last_error}`;
    healthEl.append(item);
  }
}

function markHealthUnknown() {
  for (const item of healthEl.children) item.dataset.state = "unreachable";
}

// ---------------------------------------------------------------------------- token

/** The tab's token: kept in sessionStorage, asked for when the server refuses or it expires. */
const tokenStore = {
  form: document.getElementById("token-form"),
  input: document.getElementById("token-input"),
  note: document.getElementById("token-note"),
  renewTimer: null,

  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null; // storage disabled: the form still works for this page's life
    }
  },

  set(token) {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      /* keep going without storage */
    }
  },

  /** Take a token from the URL's fragment, then remove it from the address bar. */
  fromFragment() {
    const match = location.hash.match(/[#&]access_token=([^&]+)/);
    if (!match) return;
    this.set(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  },

  ask(reason) {
    this.note.textContent = `This gateway needs a token: ${reason}.`;
    this.form.hidden = false;
    this.input.focus();
  },

  /** The server accepted the token: warn (and ask for the next) before it expires. */
  accepted(expiresAt) {
    this.form.hidden = true;
    clearTimeout(this.renewTimer);
    if (!Number.isFinite(expiresAt)) return;
    const warnIn = expiresAt * 1000 - Date.now() - RENEW_WARNING_MS;
    this.renewTimer = setTimeout(() => this.ask("the current one expires within a minute"),
      Math.max(0, warnIn));
  },

  submit(token) {
    this.set(token);
    this.form.hidden = true;
    if (socket.open) socket.send({ action: "auth", token }); // renew in band
    else socket.connect();
  },
};

tokenStore.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = tokenStore.input.value.trim();
  if (!token) return;
  tokenStore.input.value = "";
  tokenStore.submit(token);
});

// ---------------------------------------------------------------------------- start

tokenStore.fromFragment();

for (const symbol of loadWatchlist()) addCard(symbol, parseSymbol(symbol).market);
emptyEl.hidden = cards.size > 0;
saveWatchlist(); // a first visit stores the defaults
window.addEventListener("online", () => { if (!socket.ws) socket.connect(); });
setInterval(pollServer, POLL_EVERY_MS);
socket.connect();
