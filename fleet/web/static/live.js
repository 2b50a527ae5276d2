// The video wall (/live): device events from GET /api/relay/feed as cards, newest first, at most
// data-shown of them. EventSource reconnects by itself after a dropped connection or an
// `overflow` (and sends Last-Event-ID); when the feed refuses (503: too many clients, 401: logged
// out) it gives up, so this page opens a new one after a while, resuming after the last id seen.
(function () {
  "use strict";
  var grid = document.getElementById("live");
  if (!grid || !grid.dataset.feed) return;
  var status = document.getElementById("live-status");
  var card = document.getElementById("live-card");
  var words = JSON.parse(grid.dataset.words);
  var shown = parseInt(grid.dataset.shown, 10) || 60;
  var lang = grid.dataset.lang === "vi" ? "vi-VN" : "en-GB";
  var clock = { timeZone: grid.dataset.tz }; // the city's wall clock (FLEET_TIMEZONE), as on the other pages
  var lastId = null;
  var source = null;
  var IMAGE_TRIES = 4; // an image may reach the fleet a little after its event
  var IMAGE_WAIT_MS = 5000;
  var REOPEN_MS = 10000;
  var FRESH_MS = 30000; // a card is highlighted when its event reached the fleet this recently

  function say(text, kind) {
    status.textContent = text;
    status.className = "live-status" + (kind ? " " + kind : "");
  }

  function word(key, fallback) {
    return Object.prototype.hasOwnProperty.call(words, key) ? words[key] : fallback;
  }

  function image(box, url, tries) {
    var img = document.createElement("img");
    img.alt = "";
    img.addEventListener("error", function () {
      box.removeChild(img);
      if (tries > 1) {
        box.textContent = word("image_pending", "…");
        setTimeout(function () { image(box, url, tries - 1); }, IMAGE_WAIT_MS);
      } else {
        box.textContent = word("no_image", "");
      }
    });
    img.addEventListener("load", function () {
      if (box.firstChild && box.firstChild.nodeType === Node.TEXT_NODE) box.removeChild(box.firstChild);
    });
    img.src = url;
    box.appendChild(img);
  }

  function show(data) {
    var node = card.content.firstElementChild.cloneNode(true);
    var ev = data.event, dev = data.device;
    node.classList.add("sev-" + ev.severity);
    if (Date.now() - Date.parse(ev.received_at) < FRESH_MS) node.classList.add("fresh");
    node.dataset.device = dev.id;
    node.querySelector(".sev").textContent = word("severity." + ev.severity, ev.severity);
    node.querySelector(".live-type").textContent = ev.type;
    node.querySelector(".live-phase").textContent = word("phase." + ev.phase, ev.phase);
    node.querySelector(".live-device").textContent = dev.name ? dev.name + " (" + dev.id + ")" : dev.id;
    node.querySelector(".live-ward").textContent = dev.ward || "—";
    node.querySelector(".live-category").textContent = word("category." + ev.category, ev.category);
    var time = node.querySelector(".live-time");
    time.dateTime = ev.at;
    time.textContent = new Date(ev.at).toLocaleString(lang, clock);
    var box = node.querySelector(".live-img");
    if (data.snapshot && data.snapshot.url) {
      image(box, data.snapshot.url, IMAGE_TRIES);
    } else {
      box.classList.add("none");
    }
    grid.insertBefore(node, grid.firstChild);
    while (grid.children.length > shown) grid.removeChild(grid.lastChild);
  }

  function open() {
    var url = grid.dataset.feed;
    if (lastId !== null) url += "&last_event_id=" + encodeURIComponent(lastId);
    say(word("connecting", "…"));
    source = new EventSource(url);
    source.addEventListener("open", function () {
      say(word("connected", "live"), "ok");
    });
    source.addEventListener("device.event", function (e) {
      lastId = e.lastEventId;
      show(JSON.parse(e.data));
    });
    source.addEventListener("gap", function () {
      say(word("gap", ""), "ok");
    });
    source.addEventListener("overflow", function () {
      say(word("overflow", ""));
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        say(word("lost", ""), "bad");
        source.close();
        setTimeout(open, REOPEN_MS);
      } else {
        say(word("connecting", "…"));
      }
    });
  }

  open();
})();
