// pqsync dashboard: sync buttons, the Sync all dialog and its live progress.
// Plain JavaScript served as a file (the Content-Security-Policy forbids inline scripts);
// it only calls the JSON API, with the session's CSRF token.
"use strict";

(function () {
  var API = "/api/partner-dashboard";
  var POLL_MS = 1000;

  // The server's clock, not the browser's: "2 minutes ago" must not depend on a laptop's
  // clock being right.
  var serverNow = document.querySelector('meta[name="server-now"]');
  var skew = serverNow ? Date.parse(serverNow.getAttribute("content")) - Date.now() : 0;
  function now() {
    return Date.now() + (skew || 0);
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function call(method, path, body, extraHeaders) {
    var headers = { "X-CSRF-Token": csrfToken(), "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    Object.keys(extraHeaders || {}).forEach(function (k) { headers[k] = extraHeaders[k]; });
    return fetch(path, {
      method: method,
      headers: headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { status: response.status, data: data };
      });
    }, function () {
      return { status: 0, data: {} };
    });
  }

  // -- words shown to people -------------------------------------------------------------

  function plural(count, word) {
    return count + " " + word + (count === 1 ? "" : "s");
  }

  function ago(iso) {
    var seconds = Math.round((now() - Date.parse(iso)) / 1000);
    if (!(seconds >= 60)) return "just now";
    if (seconds < 3600) return plural(Math.floor(seconds / 60), "minute") + " ago";
    if (seconds < 86400) return plural(Math.floor(seconds / 3600), "hour") + " ago";
    return plural(Math.floor(seconds / 86400), "day") + " ago";
  }

  // "" when there is no summary: the counts are not the viewer's to see (no ROI consent).
  function summaryText(summary) {
    if (!summary) return "";
    var parts = [summary["new"] + " new", summary.updated + " updated"];
    if (summary.errors) parts.push(summary.errors + " failed");
    return parts.join(", ");
  }

  function errorText(result) {
    var error = (result.data && result.data.error) || {};
    switch (error.code) {
      case "intakeq_unreachable":
      case "intakeq_error":
        return "PracticeQ is not answering; nothing was changed. Try again in a minute.";
      case "intakeq_budget_exhausted":
        return "Today's PracticeQ request budget is used up; nothing was changed. " +
          "Try again after " + shortTime(error.retryAt) + ".";
      case "intakeq_auth_failed":
        return "PracticeQ refused the clinic's key; nothing was changed. Please tell the clinic.";
      case "sync_in_progress":
        return "A sync of this patient is already running; it will finish on its own.";
      case "not_found":
        return "This patient is no longer on your list.";
      case "unauthenticated":
        return "Your session ended. Please sign in again.";
      case "csrf_failed":
        return "The page is out of date. Please reload it and try again.";
      case "invalid_date_range":
        return "Check the dates: " + error.message + ".";
    }
    if (result.status === 0) return "The dashboard cannot be reached; nothing was changed. Check the connection and try again.";
    return "The sync did not run; nothing was changed. Try again in a minute.";
  }

  function shortTime(iso) {
    if (!iso) return "a while";
    var match = /T(\d\d):(\d\d)/.exec(iso);
    if (!match) return iso;
    var hour = Number(match[1]);
    var suffix = hour < 12 ? "AM" : "PM";
    return ((hour + 11) % 12 + 1) + ":" + match[2] + " " + suffix;
  }

  // "Nov 15, 2025 at 2:00 PM" from "2025-11-15T14:00:00-07:00": the API already answers in
  // the organisation's zone, so the digits are read as they are.
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function appointmentTime(iso) {
    var m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(iso || "");
    if (!m) return iso || "";
    return MONTHS[Number(m[2]) - 1] + " " + Number(m[3]) + ", " + m[1] + " at " +
      shortTime(iso);
  }

  // -- one patient ------------------------------------------------------------------------

  function setStatus(element, text, kind) {
    element.textContent = text;
    element.classList.remove("ok", "bad");
    if (kind) element.classList.add(kind);
  }

  var NOT_NEXT = ["cancelled", "declined", "no_show"];

  function refreshRow(patientId, data) {
    var row = document.querySelector('[data-patient-row="' + patientId + '"]');
    if (!row) return;
    var last = row.querySelector(".last-synced");
    if (last) {
      last.textContent = "Last synced: ";
      var time = document.createElement("time");
      time.setAttribute("datetime", data.syncedAt);
      time.setAttribute("title", appointmentTime(data.syncedAt));
      time.textContent = ago(data.syncedAt);
      last.appendChild(time);
    }
    var next = row.querySelector(".next");
    if (!next || next.classList.contains("consent")) return;
    var upcoming = (data.appointments || []).filter(function (a) {
      return Date.parse(a.startTime) >= now() && NOT_NEXT.indexOf(a.status) < 0 && a.syncAction !== "deleted";
    }).sort(function (a, b) { return Date.parse(a.startTime) - Date.parse(b.startTime); });
    if (upcoming.length) {
      next.textContent = appointmentTime(upcoming[0].startTime);
      var provider = row.querySelector(".provider");
      if (provider) provider.textContent = upcoming[0].providerName || "—";
    }
  }

  function syncOne(button) {
    var patientId = button.getAttribute("data-patient");
    var status = document.getElementById("sync-status-" + patientId);
    button.disabled = true;
    setStatus(status, "Syncing appointments from PracticeQ...", null);
    call("POST", API + "/patients/" + patientId + "/sync").then(function (result) {
      button.disabled = false;
      if (result.status === 200) {
        var data = result.data;
        status.setAttribute("data-synced-at", data.syncedAt);
        status.setAttribute("data-summary", summaryText(data.summary));
        setStatus(status, syncedText(status), "ok");
        refreshRow(patientId, data);
      } else {
        setStatus(status, errorText(result), "bad");
      }
    });
  }

  function syncedText(status) {
    var summary = status.getAttribute("data-summary");
    return "Synced " + ago(status.getAttribute("data-synced-at")) + (summary ? " (" + summary + ")" : "");
  }

  // Keep "Synced 2 minutes ago" true while the page stays open.
  function tickRelativeTimes() {
    document.querySelectorAll(".sync-status[data-synced-at]").forEach(function (status) {
      status.textContent = syncedText(status);
    });
  }

  // -- sync all -----------------------------------------------------------------------------

  var STATE_LABELS = { pending: "queued", running: "syncing", done: "done", failed: "failed" };

  function showRun(panel, run) {
    panel.hidden = false;
    var total = run.patientsTotal || 0;
    var done = run.patientsDone || 0;
    var headline = document.getElementById("run-headline");
    var text;
    if (run.status === "running") {
      text = "Syncing patients... (" + done + "/" + total + " complete)";
    } else if (run.status === "failed") {
      text = "Sync all stopped: " + (run.error || "PracticeQ is not answering") + ". " +
        done + "/" + total + " complete; what was fetched is kept. Try again in a minute.";
    } else {
      var counts = summaryText(run.summary);
      text = "Sync all finished: " + done + "/" + total + " complete" + (counts ? " (" + counts + ")" : "");
    }
    if (headline.textContent !== text) headline.textContent = text;
    var bar = document.getElementById("run-bar");
    bar.max = Math.max(total, 1);
    bar.value = done;
    var list = document.getElementById("run-patients");
    var items = (run.patients || []).map(function (p) {
      var li = document.createElement("li");
      var name = document.createElement("span");
      name.textContent = p.patientName;
      var state = document.createElement("span");
      state.className = "state-" + p.state;
      var label = STATE_LABELS[p.state] || p.state;
      state.textContent = p.state === "done" && p.summary ? label + " (" + summaryText(p.summary) + ")" : label;
      li.appendChild(name);
      li.appendChild(state);
      return li;
    });
    list.replaceChildren.apply(list, items);
  }

  function follow(panel, runId) {
    panel.setAttribute("data-run", runId);
    var poll = function () {
      call("GET", API + "/sync-runs/" + runId).then(function (result) {
        if (result.status !== 200) {
          document.getElementById("run-headline").textContent =
            "The progress of this sync cannot be read right now; it goes on in the background. Reload the page to check.";
          panel.hidden = false;
          return;
        }
        showRun(panel, result.data);
        if (result.data.status === "running") {
          window.setTimeout(poll, POLL_MS);
        } else {
          panel.removeAttribute("data-run");
          document.getElementById("run-done").hidden = false;
        }
      });
    };
    poll();
  }

  function showPlan(orgId) {
    var estimate = document.getElementById("sync-all-estimate");
    call("GET", API + "/organizations/" + orgId + "/sync-plan").then(function (result) {
      if (result.status !== 200) {
        estimate.textContent = "The estimate is not available right now; the sync can still start.";
        return;
      }
      var plan = result.data;
      document.getElementById("sync-all-count").textContent = String(plan.patients);
      estimate.textContent = "Estimated time: about " + plural(plan.estimatedMinutes, "minute") +
        " (at most " + plural(plan.maxRequests, "PracticeQ request") + "; " +
        plan.requestsLeftToday + " of " + plan.dailyLimit + " left today).";
      document.getElementById("sync-all-budget").hidden = plan.maxRequests <= plan.requestsLeftToday;
    });
  }

  function setUpSyncAll() {
    var panel = document.getElementById("run-progress");
    if (!panel) return;
    document.getElementById("run-done").hidden = true;
    var running = panel.getAttribute("data-run");
    if (running) follow(panel, running);
    var open = document.getElementById("sync-all-open");
    var dialog = document.getElementById("sync-all-dialog");
    if (!open || !dialog) return;
    var errorBox = document.getElementById("sync-all-error");
    open.addEventListener("click", function () {
      var current = panel.getAttribute("data-run");
      if (current) {  // one is going: join it instead of starting another
        panel.hidden = false;
        document.getElementById("run-headline").focus();
        return;
      }
      errorBox.textContent = "";
      dialog.showModal();
      showPlan(dialog.getAttribute("data-org"));
    });
    document.getElementById("sync-all-cancel").addEventListener("click", function () {
      dialog.close();
      open.focus();
    });
    document.getElementById("sync-all-start").addEventListener("click", function () {
      var start = document.getElementById("sync-start").value;
      var end = document.getElementById("sync-end").value;
      var orgId = dialog.getAttribute("data-org");
      var startButton = document.getElementById("sync-all-start");
      startButton.disabled = true;
      call("POST", API + "/organizations/" + orgId + "/sync-all-patients",
        { dateRange: { startDate: start, endDate: end } }, { "Prefer": "respond-async" })
        .then(function (result) {
          startButton.disabled = false;
          var runId = result.status === 202 ? result.data.runId
            : result.status === 409 ? (result.data.error || {}).runId : null;
          if (!runId) {
            errorBox.textContent = errorText(result);
            return;
          }
          dialog.close();
          follow(panel, runId);
          document.getElementById("run-headline").setAttribute("tabindex", "-1");
          document.getElementById("run-headline").focus();
        });
    });
  }

  // -- the open page keeps itself current -------------------------------------------------
  // A cheap poll of the page's change mark; when it moves (a webhook, the nightly run or
  // someone else's sync changed what is shown), the page is fetched again and its parts
  // marked data-live are swapped in place: buttons and dialogs are left as they are.
  var LIVE_MS = 3000;

  function swapLiveParts(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live]").forEach(function (old) {
      var key = old.getAttribute("data-live");
      var found = fresh.querySelectorAll("[data-live]");
      for (var i = 0; i < found.length; i++) {
        if (found[i].getAttribute("data-live") === key) {
          old.replaceWith(document.importNode(found[i], true));
          return;
        }
      }
    });
  }

  function watchForChanges() {
    var meta = document.querySelector('meta[name="change-mark"]');
    if (!meta) return;
    var busy = false;
    function done() { busy = false; }
    window.setInterval(function () {
      if (busy) return;
      busy = true;
      call("GET", meta.getAttribute("data-url")).then(function (result) {
        var mark = result.data && result.data.mark;
        if (result.status !== 200 || !mark || mark === meta.getAttribute("content")) return done();
        return fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
          .then(function (response) { return response.ok ? response.text() : null; })
          .then(function (html) {
            if (html) {
              swapLiveParts(html);
              meta.setAttribute("content", mark);
              var live = document.getElementById("live-update");
              if (live) live.textContent = "Updated from PracticeQ";
            }
            done();
          }, done);
      });
    }, LIVE_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button.sync-one").forEach(function (button) {
      button.addEventListener("click", function () { syncOne(button); });
    });
    setUpSyncAll();
    window.setInterval(tickRelativeTimes, 30000);
    watchForChanges();
  });
})();
