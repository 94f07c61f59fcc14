/* The return page, live: follows the top-up with server-sent events (GET /topup/{id}/events), else
   (no EventSource, or the stream keeps failing) by polling GET /topup/{id}/status, and updates the
   page in place. Every text comes from the server in the driver's language. Never moves focus: the
   status is an aria-live region, read out when it changes. */
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || live.getAttribute("data-final") === "true") {
    return;
  }
  var STREAM_FAILURES_BEFORE_POLLING = 3;
  var POLL_MS = 4000;
  var POLL_MAX_MS = 30000;
  var source = null;
  var failures = 0;
  var pollTimer = null;
  var pollDelay = POLL_MS;
  var done = false;

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(id, text) {
    var element = byId(id);
    if (!element) {
      return;
    }
    var target = element.firstElementChild || element;
    if (text) {
      if (target.textContent !== text) {
        target.textContent = text;
      }
      element.hidden = false;
    } else {
      element.hidden = true;
    }
  }

  function show(id, visible) {
    var element = byId(id);
    if (element) {
      element.hidden = !visible;
    }
  }

  function apply(message) {
    var status = byId("status");
    if (status && message.status !== "pending") {
      status.removeAttribute("data-next-step");
    }
    if (status && status.getAttribute("data-status") !== message.status) {
      status.setAttribute("data-status", message.status);
    }
    setText("status", message.text);
    setText("balance", message.balance);
    setText("next-step", message.next);
    show("back-to-app", message.back_to_app);
    show("try-again", message.try_again);
    show("refresh", message.follow && !message.final);
    if (message.final) {
      live.setAttribute("data-final", "true");
      stop();
    }
  }

  function stop() {
    done = true;
    if (source) {
      source.close();
      source = null;
    }
    if (pollTimer) {
      clearTimeout(pollTimer);
      pollTimer = null;
    }
  }

  function schedulePoll(delay) {
    if (!done) {
      pollTimer = setTimeout(poll, delay);
    }
  }

  function poll() {
    pollTimer = null;
    var request = new XMLHttpRequest();
    request.open("GET", live.getAttribute("data-poll"));
    request.setRequestHeader("Accept", "application/json");
    request.onload = function () {
      if (request.status === 200) {
        pollDelay = POLL_MS;
        try {
          apply(JSON.parse(request.responseText));
        } catch (ignored) {
          pollDelay = Math.min(pollDelay * 2, POLL_MAX_MS);
        }
      } else if (request.status === 401 || request.status === 404) {
        stop(); // the session ended, or this is not the driver's top-up: Refresh says why
        return;
      } else {
        pollDelay = Math.min(pollDelay * 2, POLL_MAX_MS);
      }
      schedulePoll(pollDelay);
    };
    request.onerror = function () {
      pollDelay = Math.min(pollDelay * 2, POLL_MAX_MS);
      schedulePoll(pollDelay);
    };
    request.send();
  }

  function fallBackToPolling() {
    if (source) {
      source.close();
      source = null;
    }
    schedulePoll(0);
  }

  function listen() {
    if (typeof window.EventSource !== "function") {
      schedulePoll(POLL_MS);
      return;
    }
    source = new window.EventSource(live.getAttribute("data-events"));
    source.addEventListener("status", function (event) {
      failures = 0;
      try {
        apply(JSON.parse(event.data));
      } catch (ignored) {
        fallBackToPolling();
      }
    });
    source.onerror = function () {
      if (done || !source) {
        return;
      }
      // A stream that ended (its life is bounded) is opened again by the browser; one refused
      // (503: too many streams, or no session) is closed for good.
      failures += 1;
      if (source.readyState === window.EventSource.CLOSED || failures >= STREAM_FAILURES_BEFORE_POLLING) {
        fallBackToPolling();
      }
    };
  }

  listen();
})();
