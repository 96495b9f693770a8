"""The page of `retrain-edge review`, served from this machine by the standard library's HTTP server.

GET `/` is the page (it carries the run's token), `/listing.json` the photos and classes,
`/changes.json?since=V` what changed after version V (a second tab polls it), `/thumb/ID` and
`/photo/ID` a listed photo's thumbnail and file. POST `/assign`, `/discard`, `/undo`, `/class` and
`/finish` change things; each needs the run's token in an X-Review-Token header (a page of another
site cannot set it, nor read it from ours) and a JSON body. Photos are named only by their id,
their index in the listing: nothing from a request becomes a path. Everything else is 404.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import secrets
import threading
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from edge.serve import BackgroundServer, QuietHandler, is_loopback, parse_address
from trainer import UserError
from trainer.review import ReviewOptions, ReviewSession, ReviewSummary, thumbnail

logger = logging.getLogger(__name__)

MAX_CLIENTS = 8  # requests served at once; a browser opens six connections to a host
CLIENT_WAIT_S = 10.0  # a request waits this long for a place before a 503
CLIENT_TIMEOUT_S = 30.0  # a client that sends nothing for this long is dropped
MAX_BODY_BYTES = 1 << 20  # a POST body: ids of 10,000 photos fit in a tenth of it
TOKEN_HEADER = "X-Review-Token"
PHOTO_ROUTES = {"thumb", "photo"}  # the only ones with anything after their name: /thumb/ID


class Refused(UserError):
    """A change this server does not take from this client: read-only, or no valid token (403)."""


class ReviewServer:
    """The page of a ReviewSession, served on its own threads until close() or the page's Done."""

    def __init__(self, session: ReviewSession, host: str, port: int, read_only: bool = False):
        self.session, self.read_only = session, read_only
        self.token = secrets.token_urlsafe(24)
        self.run = secrets.token_hex(4)  # not secret: keeps the browser's cached thumbnails to this run's ids
        self.finished = threading.Event()
        self.clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._server = BackgroundServer(host, port, type("ReviewHandler", (_Handler,), {"review": self}), "review page")
        port, self.url = self._server.port, self._server.url
        # Behind a loopback address only this machine's names for it are accepted: a page of another site
        # whose name was made to point here (DNS rebinding) sends its own name and is refused.
        self.hosts = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"} if is_loopback(host) else None
        if self.hosts is None:
            logger.warning(f"the review page at {self.url} has no authentication: anyone who can reach this "
                           "address sees the photos" + ("" if read_only else " and can move them (add --read_only)"))

    def page(self) -> bytes:
        settings = json.dumps({"token": "" if self.read_only else self.token, "readOnly": self.read_only,
                               "run": self.run})
        return PAGE.replace("/*SETTINGS*/{}", settings).encode()

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exception) -> None:
        self.close()


def review(options: ReviewOptions, on_serving=lambda url: None) -> ReviewSummary:
    """Serve the review page until its Done button or Ctrl-C; returns what this run did to the files."""
    with ReviewSession(options) as session:
        with ReviewServer(session, *parse_address(options.serve), read_only=options.read_only) as server:
            on_serving(server.url)
            with contextlib.suppress(KeyboardInterrupt):
                while not server.finished.wait(0.5):  # a timed wait: Ctrl-C reaches the main thread
                    pass
        return session.summary()


def is_number(text: str) -> bool:
    """Whether text is a whole number in ASCII digits (str.isdigit also takes '²')."""
    return text.isascii() and text.isdigit()


class _Handler(QuietHandler):
    review: ReviewServer
    server_version = "retrain-edge-review"
    # Keep-alive: a screen of thumbnails over the browser's six connections, not a connection and a thread each.
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT_S

    def _serve(self, routes: dict) -> None:
        if self.review.hosts is not None and self.headers.get("Host") not in self.review.hosts:
            self._send_json({"error": "unknown host"}, HTTPStatus.FORBIDDEN)
            return
        parts = urlsplit(self.path)
        name, _, argument = parts.path.lstrip("/").partition("/")
        route = routes.get(name)
        if route is None or (argument and name not in PHOTO_ROUTES):
            self._send_json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        if not self.review.clients.acquire(timeout=CLIENT_WAIT_S):
            self._send_json({"error": f"at most {MAX_CLIENTS} requests at once"}, HTTPStatus.SERVICE_UNAVAILABLE)
            return
        try:
            route(argument, parse_qs(parts.query))
        except Refused as error:
            self._send_json({"error": str(error)}, HTTPStatus.FORBIDDEN)
        except UserError as error:
            self._send_json({"error": str(error)}, HTTPStatus.BAD_REQUEST)
        except ConnectionError:
            pass  # the client went away (a broken pipe or a reset): no one to answer
        except OSError as error:  # the files, not the client: say so in one line, and keep serving
            logger.warning(f"review page: {self.path}: {error.strerror or error}")
            self._send_json({"error": f"{error.strerror or error}"}, HTTPStatus.INTERNAL_SERVER_ERROR)
        finally:
            self.review.clients.release()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            pass  # the browser closed a kept-alive connection: nothing to answer, nothing to report

    def do_GET(self) -> None:
        self._serve({"": self._page, "listing.json": self._listing, "changes.json": self._changes,
                     "thumb": self._thumb, "photo": self._photo})

    def do_POST(self) -> None:
        self._serve({"assign": self._assign, "discard": self._discard, "undo": self._undo, "class": self._class,
                     "finish": self._finish})

    def _send_json(self, value, status: HTTPStatus = HTTPStatus.OK) -> None:
        if status != HTTPStatus.OK:
            self.close_connection = True  # a refused POST's body was not read: it must not pass for the next request
        self._send("application/json", json.dumps(value, separators=(",", ":")).encode(), status)

    def _photo_id(self, argument: str) -> int:
        if not is_number(argument) or int(argument) >= len(self.review.session.photos):
            raise UserError("no such photo")
        return int(argument)

    # --- GET ---

    def _page(self, argument: str, query: dict) -> None:
        self._send("text/html; charset=utf-8", self.review.page())

    def _listing(self, argument: str, query: dict) -> None:
        self._send("application/json", self.review.session.listing().encode())

    def _changes(self, argument: str, query: dict) -> None:
        since = query.get("since", ["0"])[0]
        if not is_number(since):
            raise UserError("since takes a version number")
        self._send_json(self.review.session.changes(int(since)))

    def _thumb(self, argument: str, query: dict) -> None:
        session = self.review.session
        with session.lock:
            path = session.photos[self._photo_id(argument)].path
        try:
            jpeg = thumbnail(path, session.thumbnail_dir)
        except (OSError, ValueError):  # gone meanwhile, or not an image Pillow reads
            self._send_json({"error": "no thumbnail"}, HTTPStatus.NOT_FOUND)
            return
        # The page asks for /thumb/ID?run=<this run>: an id names another photo in another run.
        self._send("image/jpeg", jpeg, cache="private, max-age=3600")

    def _photo(self, argument: str, query: dict) -> None:
        session = self.review.session
        with session.lock:
            path = session.photos[self._photo_id(argument)].path
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # moved or removed by hand meanwhile
            self._send_json({"error": "no such file"}, HTTPStatus.NOT_FOUND)
            return
        self._send(mimetypes.guess_type(path.name)[0] or "application/octet-stream", data)

    # --- POST ---

    def _body(self) -> dict:
        """The JSON body of a change, after checking the token; raises UserError."""
        if self.review.read_only:
            raise Refused("this review is read-only")
        if not secrets.compare_digest(self.headers.get(TOKEN_HEADER, "").encode(), self.review.token.encode()):
            raise Refused("missing or wrong token: reload the page")
        if self.headers.get_content_type() != "application/json":
            raise UserError("changes are JSON")
        length = self.headers.get("Content-Length", "")
        if not is_number(length) or int(length) > MAX_BODY_BYTES:
            raise UserError("a change needs a body of known, small length")
        try:
            body = json.loads(self.rfile.read(int(length)) or b"{}")
        except ValueError:
            raise UserError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise UserError("the body is not a JSON object")
        return body

    def _ids(self, body: dict) -> list[int]:
        ids = body.get("ids")
        photo_count = len(self.review.session.photos)
        if not isinstance(ids, list) or not all(type(i) is int and 0 <= i < photo_count for i in ids):
            raise UserError("ids must be a list of photo ids of the listing")
        return list(dict.fromkeys(ids))

    def _assign(self, argument: str, query: dict) -> None:
        body = self._body()
        ids, class_name = self._ids(body), body.get("class")
        if not isinstance(class_name, str):
            raise UserError("class must be a class name")
        self._send_json(self.review.session.assign(ids, class_name))

    def _discard(self, argument: str, query: dict) -> None:
        self._send_json(self.review.session.discard(self._ids(self._body())))

    def _undo(self, argument: str, query: dict) -> None:
        self._body()
        self._send_json(self.review.session.undo())

    def _class(self, argument: str, query: dict) -> None:
        name = self._body().get("name")
        if not isinstance(name, str):
            raise UserError("name must be a class name")
        self._send_json({"name": self.review.session.add_class(name)})

    def _finish(self, argument: str, query: dict) -> None:
        self._body()
        self._send_json({"finished": True})
        self.review.finished.set()


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>review · retrain-edge</title>
<link rel="icon" href="data:,">
<style>
:root { color-scheme: light dark; --bg: #f5f5f3; --fg: #1c1c1e; --muted: #6e6e73; --card: #fff; --line: #dcdcd8;
        --accent: #2f6fde; --done: #1b8a4a; --discard: #b8322a; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #161618; --fg: #ececec; --muted: #9a9aa0; --card: #222225; --line: #3a3a3e; --accent: #6e9cff; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
header { position: sticky; top: 0; z-index: 2; background: var(--bg); border-bottom: 1px solid var(--line);
         padding: 10px 16px 8px; }
#title { display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }
#title h1 { font-size: 16px; margin: 0; }
#progress, #hint { color: var(--muted); font-size: 13px; }
#message { color: var(--discard); font-size: 13px; }
#bar { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; align-items: center; }
button, input { font: inherit; color: inherit; }
.class, .tool { border: 1px solid var(--line); border-radius: 6px; padding: 3px 9px; background: var(--card);
                cursor: pointer; display: inline-flex; gap: 6px; align-items: baseline; }
.class:hover, .tool:hover { border-color: var(--accent); }
.class .count { color: var(--muted); font-variant-numeric: tabular-nums; }
.class.bumped .count { color: var(--done); font-weight: 600; }
kbd { font: 11px ui-monospace, monospace; border: 1px solid var(--line); border-bottom-width: 2px; border-radius: 4px;
      padding: 0 4px; color: var(--muted); }
#new-class { width: 11em; border: 1px dashed var(--line); border-radius: 6px; padding: 3px 8px; background: transparent; }
.tool.discard { color: var(--discard); }
body.read-only .tool, body.read-only #new-class { display: none; }
main { padding: 4px 16px 80px; }
h2 { font-size: 14px; margin: 18px 0 8px; font-weight: 600; }
h2 small { color: var(--muted); font-weight: normal; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, 156px); gap: 8px; }
.card { width: 156px; padding: 4px; border: 2px solid transparent; border-radius: 8px; background: var(--card);
        cursor: pointer; user-select: none; position: relative; scroll-margin: 120px 0 24px;
        content-visibility: auto; contain-intrinsic-size: 156px 222px; }
.card img { width: 144px; height: 144px; object-fit: contain; display: block; border-radius: 4px; background: #8881; }
.card .top, .card .rest, .card .name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
                                       font-variant-numeric: tabular-nums; min-height: 1.3em; }
.card .top { font-size: 13px; font-weight: 600; margin-top: 2px; }
.card .rest { font-size: 12px; color: var(--muted); }
.card .name { font-size: 11px; color: var(--muted); }
.card.selected { border-color: var(--accent); background: color-mix(in srgb, var(--accent) 12%, var(--card)); }
.card.cursor { box-shadow: 0 0 0 2px var(--bg), 0 0 0 4px var(--accent); }
.card.moved img, .card.discarded img { opacity: 0.35; }
.badge { display: none; position: absolute; top: 10px; left: 10px; right: 10px; padding: 2px 6px; border-radius: 4px;
         font-size: 12px; font-weight: 600; color: #fff; background: var(--done); text-align: center;
         overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.card.moved .badge { display: block; }
.card.discarded .badge { display: block; background: var(--discard); }
#preview { position: fixed; inset: 0; z-index: 3; background: #000d; display: none; align-items: center;
           justify-content: center; flex-direction: column; color: #eee; gap: 8px; }
#preview.open { display: flex; }
#preview img { height: 84vh; width: 92vw; object-fit: contain; }  /* a small frame is shown large too */
</style>
</head>
<body>
<header>
  <div id="title"><h1>review</h1><span id="progress">loading…</span><span id="message" role="status"></span></div>
  <div id="bar">
    <span id="classes"></span>
    <input id="new-class" placeholder="new class (n)" aria-label="new class name" maxlength="64">
    <button class="tool discard" id="discard"><kbd>x</kbd> discard</button>
    <button class="tool" id="undo"><kbd>u</kbd> undo <span id="undoable"></span></button>
    <button class="tool" id="finish">done</button>
    <span id="hint">arrows move · shift+arrows or shift+click select more · ctrl+a selects the group · enter shows it large</span>
  </div>
</header>
<main id="grid"></main>
<div id="preview"><img alt=""><div id="preview-caption"></div></div>
<script>
"use strict";
const SETTINGS = /*SETTINGS*/{};
const POLL_MS = 1000;          // a second tab, or the other person, sees changes this soon
const FIRST_CARDS = 300;       // cards added before the first paint: a large screen's worth, twice
const LATER_CARDS = 500;       // then this many at a time, letting the browser paint and load between
const KEYS = "1234567890abcdefghijklmopqrstvwyz";  // class keys; n, u and x are taken
let photos = [], classes = [], version = 0, cursor = 0, anchor = 0, cards = [];
const selected = new Set();
const $ = id => document.getElementById(id);
const escapeHtml = text => String(text).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);

function scoresText(photo) {  // [the best score, the rest]
  const scores = photo.scores.map(([label, score]) => `${label} ${score.toFixed(2)}`);
  if (photo.labelled !== null) return [`looks like ${scores[0]}`, `labelled ${photo.labelled}`];
  return [scores[0] || "no scores", scores.slice(1).join(" · ")];
}

function cardHtml(photo) {
  const [top, rest] = scoresText(photo);
  const status = photo.discarded ? " discarded" : (photo.moved ? " moved" : "");
  // Chromium's own lazy loading: no script runs per card, and the first screen's thumbnails are asked for first.
  return `<div class="card${status}" data-id="${photo.id}"><img alt="" width="144" height="144" loading="lazy" ` +
         `src="thumb/${photo.id}?run=${SETTINGS.run}"><span class="badge">${escapeHtml(badge(photo))}</span>` +
         `<div class="top">${escapeHtml(top)}</div><div class="rest">${escapeHtml(rest)}</div>` +
         `<div class="name">${escapeHtml(photo.name)}</div></div>`;
}

function render() {
  // The groups' headings at once; the cards in chunks, in order, after the first screen has painted:
  // the browser's work for 10,000 cards would otherwise come before any thumbnail is asked for.
  const groupSizes = new Map(), grids = new Map();  // a Map keeps the order of groups named like numbers
  for (const photo of photos) groupSizes.set(photo.group, (groupSizes.get(photo.group) || 0) + 1);
  $("grid").innerHTML = photos.length ? Array.from(groupSizes, ([group, size]) =>
    `<section><h2>${escapeHtml(group)} <small>${size} photo${size === 1 ? "" : "s"}</small></h2><div class="grid"></div></section>`
  ).join("") : "<p>Nothing to review here.</p>";
  const groupNames = Array.from(groupSizes.keys());
  $("grid").querySelectorAll(".grid").forEach((grid, index) => grids.set(groupNames[index], grid));
  cards = [];
  const addCards = count => {
    const end = Math.min(photos.length, cards.length + count);
    while (cards.length < end) {
      const group = photos[cards.length].group, first = cards.length;
      let last = first;
      while (last < end && photos[last].group === group) last++;
      grids.get(group).insertAdjacentHTML("beforeend", photos.slice(first, last).map(cardHtml).join(""));
      cards.push(...Array.from(grids.get(group).children).slice(-(last - first)));
    }
    // One frame between two chunks, so the screen paints and the thumbnails show while cards are added.
    if (cards.length < photos.length) requestAnimationFrame(() => setTimeout(() => addCards(LATER_CARDS), 0));
  };
  addCards(FIRST_CARDS);
  setCursor(0, false);
}

function showStatus(photo) {
  const card = cards[photo.id];
  if (!card) return;  // not added yet: it will be with its new status
  card.classList.toggle("moved", photo.moved && !photo.discarded);
  card.classList.toggle("discarded", photo.discarded);
  card.querySelector(".badge").textContent = badge(photo);
}
const badge = photo => photo.discarded ? "discarded" : (photo.moved ? `→ ${photo.class}` : "");

function renderClasses() {
  const previous = Object.fromEntries(Array.from(document.querySelectorAll(".class")).map(b => [b.dataset.name, b.dataset.count]));
  $("classes").replaceChildren(...classes.map((entry, index) => {
    const button = document.createElement("button");
    button.className = "class";
    button.dataset.name = entry.name;
    button.dataset.count = entry.count;
    button.innerHTML = `${index < KEYS.length ? `<kbd>${KEYS[index]}</kbd>` : ""}${escapeHtml(entry.name)} <span class="count">${entry.count}</span>`;
    if (previous[entry.name] !== undefined && previous[entry.name] !== String(entry.count)) {
      button.classList.add("bumped");
      setTimeout(() => button.classList.remove("bumped"), 1200);
    }
    button.onclick = () => assign(entry.name);
    return button;
  }));
  const done = photos.filter(photo => photo.moved && !photo.discarded).length;
  const discarded = photos.filter(photo => photo.discarded).length;
  $("progress").textContent = `${photos.length} photos · ${done} labelled · ${discarded} discarded · ` +
                              `${photos.length - done - discarded} to go`;
}

function apply(reply) {
  for (const change of reply.changes) {
    const photo = photos[change.id];
    Object.assign(photo, change);
    showStatus(photo);
  }
  version = Math.max(version, reply.version);
  const known = new Set(reply.classes.map(entry => entry.name));
  classes = reply.classes.concat(classes.filter(entry => !known.has(entry.name) && entry.typed));
  $("undoable").textContent = reply.undoable ? `(${reply.undoable})` : "";
  renderClasses();
}

async function post(path, body) {
  if (SETTINGS.readOnly) return null;
  try {
    const response = await fetch(path, {method: "POST", body: JSON.stringify(body),
                                        headers: {"Content-Type": "application/json", "X-Review-Token": SETTINGS.token}});
    const reply = await response.json();
    if (!response.ok) { $("message").textContent = reply.error; return null; }
    $("message").textContent = "";
    return reply;
  } catch (error) {
    $("message").textContent = "the review is not answering: was it stopped?";
    return null;
  }
}

// A photo's id is its index in the listing, which is also the order of the cards.
function chosen() { return selected.size ? Array.from(selected).sort((a, b) => a - b) : (photos.length ? [cursor] : []); }

async function change(path, body, ids) {
  const reply = await post(path, body);
  if (!reply) return;
  apply(reply);
  if (ids) {  // on to the next photo still to do, after the last one changed
    let next = Math.max(...ids) + 1;
    while (next < cards.length && (photos[next].moved || photos[next].discarded)) next++;
    setCursor(Math.min(next, cards.length - 1), false);
  }
}

function assign(name) { const ids = chosen(); if (ids.length) change("assign", {ids, class: name}, ids); }
function discard() { const ids = chosen(); if (ids.length) change("discard", {ids}, ids); }
function undo() { change("undo", {}, null); }

function setCursor(index, extend) {
  if (!cards.length) return;
  index = Math.max(0, Math.min(cards.length - 1, index));
  if (cards[cursor]) cards[cursor].classList.remove("cursor");
  cursor = index;
  if (!extend) anchor = index;
  for (const id of selected) cards[id].classList.remove("selected");
  selected.clear();
  for (let id = Math.min(anchor, cursor); id <= Math.max(anchor, cursor); id++) {
    selected.add(id);
    cards[id].classList.add("selected");
  }
  cards[cursor].classList.add("cursor");
  cards[cursor].scrollIntoView({block: "nearest"});
  if ($("preview").classList.contains("open")) showPreview();
}

function toggle(id) {
  if (selected.has(id)) { selected.delete(id); cards[id].classList.remove("selected"); }
  else { selected.add(id); cards[id].classList.add("selected"); }
  cards[cursor].classList.remove("cursor");
  cursor = anchor = id;
  cards[cursor].classList.add("cursor");
}

function verticalNeighbour(direction) {
  // The card in the next row (which may be in the next group) nearest in x to the cursor's.
  const here = cards[cursor].getBoundingClientRect();
  let best = null, rowTop = null;
  for (let i = cursor + direction; i >= 0 && i < cards.length; i += direction) {
    const box = cards[i].getBoundingClientRect();
    if (rowTop === null) { if (Math.abs(box.top - here.top) < 4) continue; rowTop = box.top; }
    if (Math.abs(box.top - rowTop) >= 4) break;
    if (best === null || Math.abs(box.left - here.left) < Math.abs(cards[best].getBoundingClientRect().left - here.left)) best = i;
  }
  return best === null ? cursor : best;
}

function showPreview() {
  const photo = photos[cursor];
  $("preview").querySelector("img").src = `photo/${photo.id}?run=${SETTINGS.run}`;
  $("preview-caption").textContent = [photo.name, ...scoresText(photo)].filter(Boolean).join(" · ");
  $("preview").classList.add("open");
}

document.addEventListener("keydown", event => {
  if (event.target === $("new-class")) return;
  if (event.ctrlKey || event.metaKey) {
    if (event.key === "a") {  // the cursor's group
      event.preventDefault();
      const group = photos[cursor].group;
      let first = cursor, last = cursor;
      while (first > 0 && photos[first - 1].group === group) first--;
      while (last < cards.length - 1 && photos[last + 1].group === group) last++;
      anchor = first; setCursor(last, true);
    }
    return;
  }
  if (event.altKey) return;
  const moves = {ArrowLeft: () => cursor - 1, ArrowRight: () => cursor + 1,
                 ArrowUp: () => verticalNeighbour(-1), ArrowDown: () => verticalNeighbour(1),
                 Home: () => 0, End: () => cards.length - 1};
  if (moves[event.key]) { event.preventDefault(); setCursor(moves[event.key](), event.shiftKey); return; }
  if (event.key === "Escape") { $("preview").classList.remove("open"); setCursor(cursor, false); return; }
  if (event.key === "Enter") { $("preview").classList.contains("open") ? $("preview").classList.remove("open") : showPreview(); return; }
  if (SETTINGS.readOnly) return;
  if (event.key === "x") { discard(); return; }
  if (event.key === "u") { undo(); return; }
  if (event.key === "n") { event.preventDefault(); $("new-class").focus(); return; }
  const index = KEYS.indexOf(event.key.toLowerCase());
  if (index >= 0 && index < classes.length) assign(classes[index].name);
});

$("grid").addEventListener("click", event => {
  const card = event.target.closest(".card");
  if (!card) return;
  const id = Number(card.dataset.id);
  if (event.ctrlKey || event.metaKey) toggle(id);
  else setCursor(id, event.shiftKey);
});
$("grid").addEventListener("dblclick", event => { if (event.target.closest(".card")) showPreview(); });
$("preview").addEventListener("click", () => $("preview").classList.remove("open"));
$("discard").onclick = discard;
$("undo").onclick = undo;
$("finish").onclick = async () => {
  if (await post("finish", {})) $("progress").textContent = "done: the summary is in the terminal; this page no longer changes anything";
};
$("new-class").addEventListener("keydown", async event => {
  if (event.key === "Escape") { event.target.value = ""; event.target.blur(); return; }
  if (event.key !== "Enter" || !event.target.value.trim()) return;
  const reply = await post("class", {name: event.target.value});
  if (!reply) return;
  event.target.value = "";
  event.target.blur();
  if (!classes.some(entry => entry.name === reply.name)) classes.push({name: reply.name, count: 0, typed: true});
  renderClasses();
  assign(reply.name);
});

async function poll() {
  try {
    const response = await fetch(`changes.json?since=${version}`, {cache: "no-store"});
    if (response.ok) apply(await response.json());
  } catch (error) { /* stopped: the next poll tells */ }
  setTimeout(poll, POLL_MS);
}

async function start() {
  if (SETTINGS.readOnly) document.body.classList.add("read-only");
  const listing = await (await fetch("listing.json", {cache: "no-store"})).json();
  photos = listing.photos;
  version = listing.version;
  render();
  apply({changes: [], version: listing.version, classes: listing.classes, undoable: listing.undoable});
  setTimeout(poll, POLL_MS);
}
start();
</script>
</body>
</html>
"""
