// trio_stock dashboard: one WebSocket (seed 003's /api/v2/realtime/ws/prices, which takes
// Korean codes and US tickers alike and pushes the merged state), plus REST: polling of
// /api/v2/realtime/status (quota in use) and /api/v2/realtime/health (provider states, a
// pool's sessions, market hours), and /api/v2/realtime/history/{symbol} (the last hour of
// one-minute bars, so a chart is drawn at once instead of starting empty).
// Plain modern JS, no build step, no external resources: it must work offline.
"use strict";

const WS_PATH = "/api/v2/realtime/ws/prices";
const STATUS_URL = "/api/v2/realtime/status";
const HEALTH_URL = "/api/v2/realtime/health";
const HISTORY_URL = "/api/v2/realtime/history/";
const STORAGE_KEY = "trio_stock.watchlist";
const SORT_KEY = "trio_stock.sort";
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
// The chart: the history endpoint's one-minute bars (it keeps the last 60), extended live.
// Its time axis spans the bars it has, at least CHART_MIN_MINUTES, labelled at both ends.
const BAR_MS = 60000;
const CHART_BARS = 60;
const CHART_MIN_MINUTES = 10;
// A sort by data (change %, volume, name) follows the prices at most this often, and waits
// while the pointer is over the cards, so a card never jumps away from a click.
const SORT_EVERY_MS = 1000;
const MESSAGE_TTL_MS = 20000;
const MAX_MESSAGES = 4;
// With auth on (TRIO_STOCK_AUTH=jwt) the page needs a token: from the URL's fragment
// (#access_token=..., never sent to a server or written to its logs) or typed into the
// token form. It is kept in this tab's sessionStorage only and sent in band.
const TOKEN_KEY = "trio_stock.token";
const RENEW_WARNING_MS = 60000; // ask for a new token this long before the current expires
// Close codes after which retrying with the same token cannot help (README, close codes).
const AUTH_CLOSE = { 4001: "the token is missing, invalid or expired", 4003: "the token is not entitled to these prices", 4008: "too many connections for this token" };
// Subscription failures that heal by themselves: the page subscribes again once the market's
// provider is connected (health). Quota, limit and invalid need the user.
const RETRIED_FAILURES = new Set(["unavailable", "timeout"]);

const MARKET_CONVENTION = {
  KR: { label: "KR", name: "Korean", zone: "Asia/Seoul", zoneLabel: "KST" },
  US: { label: "US", name: "US", zone: "America/New_York", zoneLabel: "ET" },
};
// Health's markets[...].phase (the exchange's session) as the page says it.
const PHASE_TEXT = { pre_open: "pre-open", open: "open", closing: "closing auction", closed: "closed" };
const wonFormat = new Intl.NumberFormat("ko-KR", { maximumFractionDigits: 0 });
const dollarFormat = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const percentFormat = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const countFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
const zoneFormats = {};
const HANGUL = /[\uac00-\ud7a3]/;

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

/** Shares (volume, bid/ask sizes): grouped digits, no needless decimals. */
function formatCount(value) {
  return value == null ? "—" : countFormat.format(value);
}

/** One Intl formatter per market time zone and purpose, made once. */
function zoneFormat(market, kind) {
  const key = `${market}.${kind}`;
  if (!zoneFormats[key]) {
    const timeZone = MARKET_CONVENTION[market].zone;
    const options = {
      second: { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" },
      minute: { hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
      weekday: { weekday: "short" },
      day: { year: "numeric", month: "2-digit", day: "2-digit" },
    }[kind];
    zoneFormats[key] = new Intl.DateTimeFormat(kind === "day" ? "en-CA" : "en-GB", { timeZone, ...options });
  }
  return zoneFormats[key];
}

/**
 * A time in the market's own zone ("14:30:52 KST"); a day other than today there is named
 * ("Fri 16:00:00 ET"), so a closed market's last trade never passes for today's.
 */
function formatTime(ms, market, precision = "second") {
  if (!ms) return "—";
  const date = new Date(ms);
  const days = zoneFormat(market, "day");
  const today = days.format(date) === days.format(new Date());
  const day = today ? "" : `${zoneFormat(market, "weekday").format(date)} `;
  return `${day}${zoneFormat(market, precision).format(date)} ${MARKET_CONVENTION[market].zoneLabel}`;
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
    small.lang = HANGUL.test(original) ? "ko" : "en";
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
/** symbol -> card: its elements, last state, chart bars; insertion order = watchlist order. */
const cards = new Map();
const dirty = new Set();
let frameRequested = false;
const TROUBLE_CHECK_MS = 1000;
let troubleCheckedAt = 0;

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
  const find = (selector) => el.querySelector(selector);
  const card = {
    symbol, market, el,
    state: null, // the last price_update: the merged state after a tick
    previousPrice: null, flash: null, tradeTime: null,
    updatedAt: null, // the last update's time (epoch ms), shown as "as of" while stale
    fresh: false, // an update arrived since the socket (re)opened
    lastSeq: null, // seq of the last tick counted into the chart (snapshots repeat one)
    bars: [], // one-minute bars, oldest first: from history, then extended by live trades
    historyWanted: true, historyLoaded: false,
    failure: null, // {reason, retry} while the server refused the symbol
    name: find(".name"), marketTag: find(".market"), price: find(".price"),
    change: find(".change"), staleNote: find(".stale-note"), chart: find(".chart"),
    line: find(".chart .line"), area: find(".chart .area"), base: find(".chart .base"),
    volumeBars: find(".chart .volume"), rangeMark: find(".range-mark"),
    axisStart: find(".axis-start"), axisEnd: find(".axis-end"),
    open: find(".open"), high: find(".high"), low: find(".low"), prev: find(".prev"),
    volume: find("dd.volume"), time: find(".time"),
    bid: find(".bid"), bidSize: find(".bid-size"), ask: find(".ask"), askSize: find(".ask-size"),
  };
  cards.set(symbol, card);
  cardsEl.append(el);
  emptyEl.hidden = true;
  renderCard(card);
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

/** The server refused the symbol; `retry` when it can heal by itself (provider back). */
function markFailed(symbol, reason, retry = false) {
  const card = cards.get(symbol);
  if (!card) return;
  card.failure = { reason, retry };
  card.el.dataset.error = reason;
  markDirty(card);
}

function markDirty(card) {
  dirty.add(card.symbol);
  // Updates can arrive far faster than the screen refreshes: draw once per frame.
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(renderDirty);
  }
}

function markAllDirty() {
  for (const card of cards.values()) markDirty(card);
}

/** Take a price_update (the merged state after a tick) and schedule a redraw. */
function applyUpdate(message) {
  const card = cards.get(message.symbol);
  if (!card) return; // an update that crossed our unsubscribe
  if (card.failure) {
    card.failure = null;
    delete card.el.dataset.error;
  }
  const price = message.last_price;
  if (price != null && price !== card.previousPrice) {
    if (card.previousPrice != null) card.flash = price > card.previousPrice ? "flash-up" : "flash-down";
    card.previousPrice = price;
  }
  // price_update carries the merged state after any tick; only a trade (data_type "T",
  // seed 003) moves the "last trade" time and the chart, a quote (Q) only moves bid/ask.
  const seq = Number(message.seq);
  const newTick = card.lastSeq === null || !Number.isFinite(seq) || seq > card.lastSeq;
  if (Number.isFinite(seq)) card.lastSeq = Math.max(seq, card.lastSeq ?? seq);
  if (message.data_type === "T") {
    card.tradeTime = message.timestamp;
    if (newTick) addTrade(card, message);
  }
  card.updatedAt = message.timestamp || Date.now();
  card.state = message;
  card.fresh = true;
  // Data flows for a market whose provider we last saw down: ask health again (once a second
  // at most), so the card clears as soon as the server says so.
  if (providerTrouble(card.market) && Date.now() - troubleCheckedAt > TROUBLE_CHECK_MS) {
    troubleCheckedAt = Date.now();
    refreshServerState();
  }
  // History exists once the server has seen a trade (a bar per minute with trades): asking
  // before that would only earn a 404.
  if (card.historyWanted && price != null) loadHistory(card);
  if (SORTS[sortBy].live) sortPending = true;
  markDirty(card);
}

/** Count one trade into the chart's bar of its minute (a later minute starts a new bar). */
function addTrade(card, message) {
  const price = message.last_price;
  if (price == null || !message.timestamp) return;
  const time = Math.floor(message.timestamp / BAR_MS) * BAR_MS;
  const size = message.last_size ?? 0;
  const last = card.bars.at(-1);
  if (last && last.time === time) {
    last.high = Math.max(last.high, price);
    last.low = Math.min(last.low, price);
    last.close = price;
    last.volume += size;
  } else if (!last || time > last.time) {
    card.bars.push({ time, open: price, high: price, low: price, close: price, volume: size });
    if (card.bars.length > CHART_BARS) card.bars.splice(0, card.bars.length - CHART_BARS);
  }
}

/**
 * Fetch the symbol's last hour of one-minute bars and draw them at once. Asked for on the
 * symbol's first update after each (re)connect: the server then holds the symbol, the token
 * (if any) has been accepted, and a restarted server's history replaces what the page drew.
 * Bars the page built live after the history's last one are kept.
 */
async function loadHistory(card) {
  card.historyWanted = false;
  let body;
  try {
    body = await getJson(HISTORY_URL + encodeURIComponent(card.symbol));
  } catch {
    return; // no bars yet (404) or the server went away: the chart fills live
  }
  if (cards.get(card.symbol) !== card || !Array.isArray(body?.bars)) return;
  const bars = [];
  for (const b of body.bars) {
    const bar = {
      time: Number(b.time), open: Number(b.open), high: Number(b.high),
      low: Number(b.low), close: Number(b.close), volume: Number(b.volume) || 0,
    };
    if ([bar.time, bar.open, bar.high, bar.low, bar.close].every(Number.isFinite)) bars.push(bar);
  }
  const last = bars.length ? bars.at(-1).time : -Infinity;
  card.bars = [...bars, ...card.bars.filter((bar) => bar.time > last)].slice(-CHART_BARS);
  card.historyLoaded = true;
  markDirty(card);
}

function renderDirty() {
  frameRequested = false;
  for (const symbol of dirty) {
    const card = cards.get(symbol);
    if (card) renderCard(card);
  }
  dirty.clear();
}

/**
 * Why the card's prices are not live right now, or null when they are. A card that never
 * had a price is only stale when its provider is down (before that, it is just waiting).
 */
function staleReason(card) {
  const trouble = providerTrouble(card.market);
  if (card.state === null) return trouble;
  if (!socket.open) return "connection lost";
  if (trouble) return trouble;
  if (card.failure) return "not subscribed";
  if (!card.fresh) return "waiting for data";
  return null;
}

function renderCard(card) {
  const s = card.state;
  const market = card.market;
  const stale = staleReason(card);
  const phase = marketPhases[market]?.phase;

  if (stale) card.el.dataset.stale = stale;
  else delete card.el.dataset.stale;
  card.staleNote.hidden = !stale;
  if (stale) {
    const when = card.updatedAt ? `as of ${formatTime(card.updatedAt, market)}` : "no price yet";
    card.staleNote.textContent = `${when} · ${stale}`;
  }
  card.el.dataset.phase = phase ?? "";
  card.marketTag.textContent = phase && phase !== "open"
    ? `${MARKET_CONVENTION[market].label} · ${PHASE_TEXT[phase] ?? phase}` : MARKET_CONVENTION[market].label;

  const name = s?.name ?? null;
  if (card.name.textContent !== (name ?? "")) {
    card.name.textContent = name ?? "";
    card.name.title = name ?? "";
    card.name.lang = name && HANGUL.test(name) ? "ko" : "";
    card.el.setAttribute("aria-label", name ? `${card.symbol} ${name}` : card.symbol);
  }

  if (card.failure) card.change.textContent = `Not subscribed: ${card.failure.reason}`;
  if (!s) return;
  card.price.textContent = formatPrice(s.last_price, market);
  if (!card.failure) card.change.textContent = formatChange(s.change, s.change_percent, market);
  card.el.dataset.direction = s.change > 0 ? "up" : s.change < 0 ? "down" : "flat";
  card.open.textContent = formatPrice(s.open, market);
  card.high.textContent = formatPrice(s.high, market);
  card.low.textContent = formatPrice(s.low, market);
  card.prev.textContent = formatPrice(s.previous_close, market);
  card.volume.textContent = formatCount(s.volume);
  card.bid.textContent = formatPrice(s.bid_price, market);
  card.bidSize.textContent = s.bid_size == null ? "" : `× ${formatCount(s.bid_size)}`;
  card.ask.textContent = formatPrice(s.ask_price, market);
  card.askSize.textContent = s.ask_size == null ? "" : `× ${formatCount(s.ask_size)}`;
  card.time.textContent = formatTime(card.tradeTime, market);
  renderRange(card, s);
  if (card.flash && !stale) {
    card.price.classList.remove("flash-up", "flash-down");
    void card.price.offsetWidth; // restart the CSS animation on every change
    card.price.classList.add(card.flash);
  }
  card.flash = null;
  renderChart(card);
}

/** The marker of the price within the day's low..high. */
function renderRange(card, s) {
  const { low, high, last_price: price } = s;
  const known = low != null && high != null && price != null;
  card.rangeMark.hidden = !known;
  if (!known) return;
  const where = high > low ? Math.min(1, Math.max(0, (price - low) / (high - low))) : 0.5;
  card.rangeMark.style.left = `${(where * 100).toFixed(1)}%`;
}

/**
 * The bars as an SVG chart in a 100 x 40 box: closes as a line over an area (y 2..30), the
 * previous close as a dashed base line when it falls in view, volume as bars (y 32..40). The
 * x axis is time: the last bar (the forming minute, which moves with every trade) at the
 * right edge, the first bar or CHART_MIN_MINUTES earlier at the left; both ends labelled.
 */
function renderChart(card) {
  const bars = card.bars;
  const market = card.market;
  card.chart.dataset.bars = String(bars.length);
  card.chart.dataset.source = card.historyLoaded ? "history" : "live";
  if (bars.length === 0) {
    card.line.setAttribute("points", "");
    card.area.setAttribute("d", "");
    card.volumeBars.replaceChildren();
    card.base.setAttribute("visibility", "hidden");
    card.chart.setAttribute("aria-label", "no chart yet");
    card.axisStart.textContent = "";
    card.axisEnd.textContent = "";
    return;
  }
  const end = bars.at(-1).time;
  const span = Math.max(end - bars[0].time, CHART_MIN_MINUTES * BAR_MS);
  card.axisStart.textContent = formatTime(end - span, market, "minute");
  card.axisEnd.textContent = formatTime(end, market, "minute");
  const x = (time) => 100 - ((end - time) / span) * 100;
  let low = Infinity;
  let high = -Infinity;
  for (const bar of bars) {
    low = Math.min(low, bar.close);
    high = Math.max(high, bar.close);
  }
  const pad = (high - low) * 0.08 || Math.abs(high) * 0.001 || 1;
  low -= pad;
  high += pad;
  const y = (price) => 30 - ((price - low) / (high - low)) * 28;
  const points = bars.map((bar) => [x(bar.time), y(bar.close)]);
  if (points.length === 1) points.unshift([x(end - BAR_MS), points[0][1]]); // one bar: a flat stub
  const line = points.map(([px, py]) => `${px.toFixed(2)},${py.toFixed(2)}`).join(" ");
  card.line.setAttribute("points", line);
  card.area.setAttribute(
    "d", bars.length < 2 ? "" : `M${points[0][0].toFixed(2)},30 L${line.replaceAll(" ", " L")} L100,30 Z`,
  );

  const previous = card.state?.previous_close;
  const baseVisible = previous != null && previous > low && previous < high;
  card.base.setAttribute("visibility", baseVisible ? "visible" : "hidden");
  if (baseVisible) {
    const by = y(previous).toFixed(2);
    card.base.setAttribute("y1", by);
    card.base.setAttribute("y2", by);
  }

  const most = Math.max(...bars.map((bar) => bar.volume)) || 1;
  const width = Math.min(3, (BAR_MS / span) * 100 * 0.7);
  let d = "";
  for (const bar of bars) {
    const h = (bar.volume / most) * 8;
    if (h > 0) d += `M${(x(bar.time) - width / 2).toFixed(2)},40 v${(-h).toFixed(2)} h${width.toFixed(2)} v${h.toFixed(2)} Z`;
  }
  let path = card.volumeBars.firstElementChild;
  if (!path) {
    path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    card.volumeBars.append(path);
  }
  path.setAttribute("d", d);

  const first = bars[0];
  const last = bars.at(-1);
  card.chart.setAttribute(
    "aria-label",
    `${bars.length}-minute chart from ${formatTime(first.time, market, "minute")} ` +
      `(${formatPrice(first.open, market)}) to ${formatTime(last.time, market, "minute")} ` +
      `(${formatPrice(last.close, market)})`,
  );
}

// ---------------------------------------------------------------------------- sorting

const sortSelect = document.getElementById("sort-select");

/** Larger first; a card without the value goes last. */
function descending(a, b) {
  if (a == null || b == null) return (a == null) - (b == null);
  return b - a;
}

const bySymbol = (a, b) => collator.compare(a.symbol, b.symbol);
/** Sort orders: `compare` of two cards (null: the order added); `live` when prices move it. */
const SORTS = {
  added: { compare: null, live: false },
  symbol: { compare: bySymbol, live: false },
  name: {
    compare: (a, b) => {
      const [x, y] = [a.state?.name, b.state?.name];
      if (!x || !y) return (!x) - (!y) || bySymbol(a, b);
      return collator.compare(x, y) || bySymbol(a, b);
    },
    live: true, // names arrive with the first update
  },
  change: {
    compare: (a, b) => descending(a.state?.change_percent, b.state?.change_percent) || bySymbol(a, b),
    live: true,
  },
  volume: { compare: (a, b) => descending(a.state?.volume, b.state?.volume) || bySymbol(a, b), live: true },
};
let sortBy = "added";
let sortPending = false;

function loadSort() {
  let stored = null;
  try {
    stored = localStorage.getItem(SORT_KEY);
  } catch {
    stored = null;
  }
  return Object.hasOwn(SORTS, stored ?? "") ? stored : "added";
}

function saveSort() {
  try {
    localStorage.setItem(SORT_KEY, sortBy);
  } catch {
    /* the page works without storage */
  }
}

/**
 * Put the cards in the chosen order, moving only those out of place. Focus stays where it
 * was (moveBefore keeps it; older browsers lose it on a move, so it is given back).
 */
function applySort() {
  sortPending = false;
  const order = [...cards.values()];
  const { compare } = SORTS[sortBy];
  if (compare) order.sort(compare); // stable: ties keep the order added
  const focused = document.activeElement;
  let at = cardsEl.firstElementChild;
  for (const card of order) {
    if (card.el === at) {
      at = at.nextElementSibling;
      continue;
    }
    if (typeof cardsEl.moveBefore === "function") cardsEl.moveBefore(card.el, at);
    else cardsEl.insertBefore(card.el, at);
  }
  if (focused && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
}

sortSelect.addEventListener("change", () => {
  sortBy = Object.hasOwn(SORTS, sortSelect.value) ? sortSelect.value : "added";
  saveSort();
  applySort();
});
setInterval(() => {
  if (sortPending && !cardsEl.matches(":hover")) applySort();
}, SORT_EVERY_MS);

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
    // Every price on the page is now "as of" its last update, until data flows again; the
    // server may come back as a new process, so seq restarts and history is asked again.
    for (const card of cards.values()) {
      card.fresh = false;
      card.lastSeq = null;
      card.historyWanted = true;
    }
    markAllDirty();
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
    this.pongTimer = setTimeout(() => this.drop(), PONG_TIMEOUT_MS);
  }

  /**
   * No pong: the connection is half-open. A close() on it may take long to report "close"
   * (the closing handshake cannot finish), so the page gives up on it at once: stale cards
   * now, and the reconnect begins.
   */
  drop() {
    const ws = this.ws;
    if (!ws) return;
    this.onClose(ws, null);
    ws.close();
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
      applySort(); // a failed card may now sort elsewhere
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
    } else if (RETRIED_FAILURES.has(reason)) {
      const name = MARKET_CONVENTION[market].name;
      const why = reason === "timeout" ? "did not answer in time" : "is not connected";
      markFailed(symbol, `${name} provider ${why}`, true);
      showMessage(
        "warning",
        `${symbol}: the ${name} provider ${why}; the page subscribes again when it is back.`,
        { original: text, key: `${reason}-${market}` },
      );
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
  applySort();
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
    renderMarkets(health.markets);
    retryFailed();
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
  const states = {};
  for (const p of health.providers ?? []) {
    (states[p.market] ??= []).push(p.state);
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
  renderPools(health.providers ?? []);
  if (JSON.stringify(states) !== JSON.stringify(providerStates)) {
    providerStates = states;
    markAllDirty(); // cards of a market whose provider went down (or came back) change
  }
}

function markHealthUnknown() {
  for (const item of healthEl.children) item.dataset.state = "unreachable";
  marketsEl.dataset.unknown = "";
  poolsEl.dataset.unknown = "";
}

/** market -> the states of its providers, from the last /health. */
let providerStates = {};

/**
 * Why the market's prices are not flowing, from the last /health: null while one of its
 * providers is connected (or health has not been read yet).
 */
function providerTrouble(market) {
  const states = providerStates[market];
  if (!states || states.length === 0 || states.includes("connected")) return null;
  return `${market} provider ${STATE_TEXT[states[0]] ?? states[0]}`;
}

/** Subscribe again to the symbols that failed for a reason that heals (provider down). */
function retryFailed() {
  const symbols = [];
  for (const card of cards.values()) {
    if (card.failure?.retry && !providerTrouble(card.market)) {
      card.failure.retry = false; // once per failure: a new failure arms it again
      symbols.push(card.symbol);
    }
  }
  if (symbols.length) socket.send({ action: "subscribe", symbols });
}

// ---------------------------------------------------------------------------- pools

const poolsEl = document.getElementById("pools");
// A pool's columns: [heading, what it means (the heading's title), numeric].
const POOL_COLUMNS = [
  ["Session", "Its number and a hash prefix of its app key (never the key)", false],
  ["State", "The session's connection", false],
  ["Used", "Codes the pool placed on the session / the session's quota", true],
  ["Retries", "Failed connection attempts in a row", true],
  ["Connects", "Sessions opened since the gateway started", true],
];
const FAILED_TITLE = "The pool moved this session's codes to other sessions; it takes new codes once back";

/**
 * A table per pool (a provider whose /health entry lists `sessions`: several KIS app keys):
 * one row per session (its label, state, used / quota, reconnect attempts, connects; why it
 * is down on a line beneath) and the pool's total: codes placed over the quota of its usable
 * sessions. Labels are the server's ("kis-1 (7a4c…)"), which never carry a key.
 */
function renderPools(providers) {
  delete poolsEl.dataset.unknown;
  const pools = providers.filter((p) => Array.isArray(p.sessions) && p.sessions.length);
  poolsEl.replaceChildren(...pools.map(poolTable));
}

function poolTable(pool) {
  const table = document.createElement("table");
  table.className = "pool";
  table.dataset.provider = pool.name;
  table.createCaption().textContent = `${pool.market} · ${String(pool.kind).toUpperCase()} pool`;
  const head = table.createTHead().insertRow();
  for (const [text, title, numeric] of POOL_COLUMNS) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = text;
    th.title = title;
    if (numeric) th.className = "num";
    head.append(th);
  }
  const body = table.createTBody();
  for (const s of pool.sessions) {
    const row = body.insertRow();
    row.className = "session";
    row.dataset.session = s.label;
    row.dataset.state = s.state;
    if (s.failed) row.dataset.failed = "";
    poolRow(row, s.label, STATE_TEXT[s.state] ?? s.state,
      `${s.used} / ${s.quota}`, s.reconnect_attempts, s.connects);
    // Failed, and why it is down, on a line beneath, in view; a connected session's past
    // error only on hover.
    const why = [s.detail, s.last_error].filter(Boolean).join(" · ");
    if (s.failed || (why && s.state !== "connected")) {
      const line = body.insertRow();
      line.className = "why";
      line.insertCell();
      const cell = line.insertCell();
      cell.colSpan = POOL_COLUMNS.length - 1;
      if (s.failed) {
        const flag = document.createElement("span");
        flag.className = "flag";
        flag.textContent = "failed";
        flag.title = FAILED_TITLE;
        cell.append(flag, " ");
      }
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = why;
      cell.append(reason);
    } else if (why) {
      row.title = `last error: ${why}`;
    }
  }
  const sum = (field) => pool.sessions.reduce((total, s) => total + (Number(s[field]) || 0), 0);
  const usable = pool.sessions.filter((s) => !s.failed && s.state !== "auth_failed").length;
  const total = table.createTFoot().insertRow();
  total.className = "total";
  poolRow(total, "Total", `${usable} of ${pool.sessions.length} usable`,
    `${sum("used")} / ${pool.quota}`, sum("reconnect_attempts"), sum("connects"));
  return table;
}

/** Fill a row of a pool's table: its heading cell, then one cell per column. */
function poolRow(row, label, ...values) {
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = label;
  row.append(th);
  values.forEach((value, i) => {
    const cell = row.insertCell();
    cell.textContent = String(value);
    cell.className = ["state", "num used", "num retries", "num connects"][i];
  });
}

// ---------------------------------------------------------------------------- market hours

const marketsEl = document.getElementById("markets");
/** market -> {phase, next_change} from the last /health (its "markets"). */
let marketPhases = {};

/** A badge per market: "KR open · until 15:20 KST", "US closed · until Mon 04:00 ET". */
function renderMarkets(markets) {
  delete marketsEl.dataset.unknown;
  if (!markets || typeof markets !== "object") return; // an older gateway: no badges
  if (JSON.stringify(markets) === JSON.stringify(marketPhases)) return;
  marketPhases = markets;
  marketsEl.replaceChildren();
  for (const market of Object.keys(MARKET_CONVENTION)) {
    const info = markets[market];
    if (!info) continue;
    const item = document.createElement("li");
    item.dataset.market = market;
    item.dataset.phase = info.phase;
    const label = document.createElement("span");
    label.className = "phase";
    label.textContent = `${market} ${PHASE_TEXT[info.phase] ?? info.phase}`;
    item.append(label);
    const next = Date.parse(info.next_change);
    if (Number.isFinite(next)) {
      const until = document.createElement("span");
      until.className = "until";
      until.textContent = ` · until ${formatTime(next, market, "minute")}`;
      item.append(until);
      item.title = item.textContent;
    }
    marketsEl.append(item);
  }
  markAllDirty(); // each card names its market's session when it is not open
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
sortBy = loadSort();
sortSelect.value = sortBy;
applySort();
saveWatchlist(); // a first visit stores the defaults
window.addEventListener("online", () => { if (!socket.ws) socket.connect(); });
setInterval(pollServer, POLL_EVERY_MS);
socket.connect();
