// pqsync dashboard: sync buttons, the Sync all dialog and its live progress.
// Plain JavaScript served as a file (the Content-Security-Policy forbids inline scripts);
// it only calls the JSON API, with the session's CSRF token.
"use strict";

(function () {
  var API = "/api/partner-dashboard";
  var POLL_MS = 700;

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
    if (summary.deleted) parts.push(summary.deleted + " removed");
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
      case "user_rate_reached":
        return "You have started as many syncs as one person may in an hour; nothing was changed. " +
          "You may sync again at " + shortTime(error.retryAt) + ".";
      case "organization_share_used":
        return "Your organisation has used its share of today's PracticeQ requests; nothing was changed. " +
          "You may sync again at " + shortTime(error.retryAt) + ".";
      case "intakeq_reserve_reached":
        return "The rest of today's PracticeQ requests is kept for the nightly sync; nothing was changed. " +
          "You may sync again at " + shortTime(error.retryAt) + ".";
      case "sync_in_progress":
        return "A sync of this patient is already running; it will finish on its own.";
      case "not_found":
        return "This patient is no longer on your list.";
      case "unauthenticated":
        return "Your session ended. Please sign in again.";
      case "csrf_failed":
        return "The page is out of date. Please reload it and try again.";
      case "invalid_date_range":
        return "Check the dates: choose a first and a last day, at most 400 days apart.";
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

  // While a row syncs its button keeps the focus (a disabled button would drop it to the
  // page): it is marked busy and a second press does nothing.
  function setBusy(button, busy) {
    if (busy) button.setAttribute("aria-disabled", "true");
    else button.removeAttribute("aria-disabled");
  }

  function seconds(count) {
    if (count < 60) return plural(count, "second");
    return plural(Math.round(count / 60), "minute");
  }

  function waitText(run) {
    if (run.waitingSeconds) {
      return "Waiting for PracticeQ's request limit: about " + seconds(run.waitingSeconds) +
        ". The sync goes on by itself, also if you leave this page.";
    }
    return "Still syncing: PracticeQ is slow to answer. The sync goes on by itself, also if you leave this page.";
  }

  function runFailedText(kind) {
    switch (kind) {
      case "unreachable": return errorText({ data: { error: { code: "intakeq_unreachable" } } });
      case "auth": return errorText({ data: { error: { code: "intakeq_auth_failed" } } });
      case "budget": return "Today's PracticeQ request budget is used up; try again tomorrow.";
    }
    return "PracticeQ answered with an error; the sync stopped. Try again in a minute.";
  }

  // A sync that could not make the patient's data complete says why, in the run's words
  // ("PracticeQ has no client with this patient's email; ..."), else in general ones.
  function gapsText(reasons) {
    if (reasons && reasons.length) {
      return reasons.map(function (r) { return /[.!?]$/.test(r) ? r : r + "."; }).join(" ");
    }
    return "Synced with gaps: PracticeQ did not return everything for this patient, " +
      "so some appointments may be out of date. Staff can see why on the run's page.";
  }

  // After a sync the row's button reads "Sync again" (its name still says whom and where).
  function sayAgain(patientId) {
    document.querySelectorAll('button.sync-one[data-patient="' + patientId + '"]').forEach(function (button) {
      if (button.getAttribute("data-again")) return;
      var hidden = button.querySelector(".visually-hidden");
      var who = hidden ? hidden.textContent : "";
      var parts = [document.createTextNode("Sync")];
      if (who) {
        var name = document.createElement("span");
        name.className = "visually-hidden";
        name.textContent = who;
        parts.push(name);
      }
      parts.push(document.createTextNode(" again"));
      var where = document.createElement("span");
      where.className = "visually-hidden";
      where.textContent = " from PracticeQ";
      parts.push(where);
      button.replaceChildren.apply(button, parts);
      button.setAttribute("data-again", "true");
    });
  }

  function showSynced(status, patientId, syncedAt, summary) {
    sayAgain(patientId);
    status.setAttribute("data-synced-at", syncedAt);
    status.setAttribute("data-summary", summaryText(summary));
    setStatus(status, syncedText(status), "ok");
  }

  // A sync that answered 202: it goes on in the background; follow its run.
  function followPatientRun(button, status, patientId, runId) {
    var poll = function () {
      call("GET", API + "/sync-runs/" + runId).then(function (result) {
        if (result.status !== 200) {
          setBusy(button, false);
          setStatus(status, "The sync goes on in the background; reload the page later to see it.", null);
          return;
        }
        var run = result.data;
        if (run.status === "running") {
          setStatus(status, waitText(run), null);
          window.setTimeout(poll, POLL_MS);
          return;
        }
        setBusy(button, false);
        if (run.status === "failed") {
          setStatus(status, runFailedText(run.errorKind), "bad");
          return;
        }
        if (run.status === "partial" || run.status === "paused") {
          setStatus(status, run.status === "paused" ? "Sync " + (run.error || "paused") + "." :
            gapsText(run.incomplete), "bad");
          return;
        }
        var mine = (run.patients || [])[0] || {};
        var syncedAt = run.finishedAt || new Date(now()).toISOString();
        showSynced(status, patientId, syncedAt, mine.summary);
        refreshRow(patientId, { syncedAt: syncedAt, appointments: [] });
      });
    };
    poll();
  }

  function syncOne(button) {
    if (button.getAttribute("aria-disabled") === "true") return;
    var patientId = button.getAttribute("data-patient");
    var status = document.getElementById("sync-status-" + patientId);
    setBusy(button, true);
    setStatus(status, "Syncing appointments from PracticeQ...", null);
    call("POST", API + "/patients/" + patientId + "/sync").then(function (result) {
      if (result.status === 202) {
        setStatus(status, waitText(result.data), null);
        followPatientRun(button, status, patientId, result.data.runId);
        return;
      }
      setBusy(button, false);
      if (result.status === 200) {
        var data = result.data;
        if (data.success === false) {
          // A partial run: nothing is stamped as synced, and the page says why it may be stale.
          status.removeAttribute("data-synced-at");
          setStatus(status, gapsText(data.incomplete), "bad");
          return;
        }
        var removed = (data.appointments || []).filter(function (a) { return a.syncAction === "deleted"; }).length;
        var summary = data.summary ? Object.assign({ deleted: removed }, data.summary) : null;
        showSynced(status, patientId, data.syncedAt, summary);
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

  // Why something stopped, in words a person reads; "PracticeQ" is the name they know.
  function reasonText(kind) {
    switch (kind) {
      case "unreachable": return "PracticeQ did not answer";
      case "budget": return "today's PracticeQ request budget ran out";
      case "auth": return "PracticeQ refused the clinic's key (please tell the clinic)";
      case "lease": return "the sync was interrupted before it finished";
      case "internal": return "the dashboard ran into a problem";
    }
    return "PracticeQ answered with an error";
  }

  function appointmentsSynced(summary) {
    var count = summary["new"] + summary.updated + summary.unchanged + (summary.deleted || 0);
    var changed = [];
    if (summary["new"]) changed.push(summary["new"] + " new");
    if (summary.updated) changed.push(summary.updated + " updated");
    if (summary.deleted) changed.push(summary.deleted + " removed");
    return plural(count, "appointment") + " synced" + (changed.length ? " (" + changed.join(", ") + ")" : "");
  }

  // One patient's line: what happened to them in this run, whatever the run's outcome.
  function lineText(run, p) {
    var stopped = run.status === "failed";
    if (p.state === "done") return p.summary ? appointmentsSynced(p.summary) : "synced";
    if (p.state === "failed") return "failed: " + reasonText(p.errorKind || run.errorKind);
    if (p.state === "running") {
      if (stopped) return "not finished: " + reasonText(run.errorKind) + "; what was fetched is kept";
      return run.plan === "window" && run.pagesDone ? "syncing (with everyone, page by page)" : "syncing";
    }
    return stopped ? "not synced: the sync stopped before this patient" : "queued";
  }

  function headlineText(run) {
    var total = run.patientsTotal || 0;
    var done = run.patientsDone || 0;
    if (run.status === "running" && run.waiting) return "Sync all is " + run.waiting + ".";
    if (run.status === "paused") {
      return "Sync all " + (run.error || "paused") + ". " + done + "/" + total +
        " complete; what was fetched is kept.";
    }
    if (run.status === "running") {
      if (run.plan === "window" && run.pagesDone && !done) {
        return "Fetching from PracticeQ: page " + run.pagesDone + " of about " +
          Math.max(run.pagesAbout || 1, run.pagesDone) + " (" + run.percent + "%)";
      }
      var wait = run.waitingSeconds ? " Waiting for PracticeQ's request limit: about " +
        seconds(run.waitingSeconds) + "; it goes on by itself." : "";
      return "Syncing patients... (" + done + "/" + total + " complete, " + run.percent + "%)" + wait;
    }
    if (run.status === "failed") {
      return "Sync all stopped: " + reasonText(run.errorKind) + ". " + done + "/" + total +
        " complete; what was fetched is kept. You can try again.";
    }
    if (run.status === "partial") {
      return "Sync all finished with gaps: some appointments may be out of date. " +
        (run.incomplete || []).join(" ");
    }
    var counts = summaryText(run.summary);
    return "Sync all finished: " + done + "/" + total + " complete" + (counts ? " (" + counts + ")" : "");
  }

  function showRun(panel, run) {
    panel.hidden = false;
    var headline = document.getElementById("run-headline");
    var text = headlineText(run);
    if (headline.textContent !== text) headline.textContent = text;
    var percent = run.percent;
    var bar = document.getElementById("run-bar");
    bar.max = 100;
    bar.value = percent;
    document.getElementById("run-percent").textContent = percent + "%";
    panel.setAttribute("data-percent", String(percent));
    var list = document.getElementById("run-patients");
    var items = (run.patients || []).map(function (p) {
      var li = document.createElement("li");
      li.setAttribute("data-state", p.state);
      var name = document.createElement("span");
      name.textContent = p.patientName;
      var state = document.createElement("span");
      state.className = "state-" + p.state + (run.status === "failed" && p.state !== "done" ? " state-failed" : "");
      state.textContent = lineText(run, p);
      if (p.incomplete && p.incomplete.length) {
        state.className = "state-failed";
        state.textContent = "incomplete: " + p.incomplete.join(" ");
      }
      li.appendChild(name);
      li.appendChild(state);
      return li;
    });
    list.replaceChildren.apply(list, items);
    var retry = document.getElementById("run-retry");
    if (retry) retry.hidden = run.status !== "failed";
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

  // A date range's problem in plain words, or "" when it can be used.
  function rangeProblem(start, end) {
    if (!/^\d{4}-\d\d-\d\d$/.test(start || "")) return "Choose the first day of the range.";
    if (!/^\d{4}-\d\d-\d\d$/.test(end || "")) return "Choose the last day of the range.";
    var days = (Date.parse(end) - Date.parse(start)) / 86400000 + 1;
    if (days < 1) return "The last day is before the first day: choose a last day on or after " + start + ".";
    if (days > 400) return "The range is " + Math.round(days) + " days long; choose at most 400 days.";
    return "";
  }

  function addDays(iso, count) {
    var d = new Date(Date.parse(iso + "T12:00:00Z") + count * 86400000);
    return d.toISOString().slice(0, 10);
  }

  var planRequest = 0;
  function showPlan(orgId) {
    var estimate = document.getElementById("sync-all-estimate");
    var errorBox = document.getElementById("sync-all-error");
    var start = document.getElementById("sync-start").value;
    var end = document.getElementById("sync-end").value;
    var problem = rangeProblem(start, end);
    errorBox.textContent = problem;
    document.getElementById("sync-all-start").setAttribute("aria-disabled", problem ? "true" : "false");
    if (problem) {
      estimate.textContent = "";
      return;
    }
    var mine = ++planRequest;
    estimate.textContent = "Working out how long it takes…";
    call("GET", API + "/organizations/" + orgId + "/sync-plan?startDate=" + start + "&endDate=" + end)
      .then(function (result) {
        if (mine !== planRequest) return;  // the range changed meanwhile
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

  function setUpPresets(dialog) {
    var startInput = document.getElementById("sync-start");
    var endInput = document.getElementById("sync-end");
    var from = startInput.value, to = endInput.value;
    var today = addDays(from, 90);  // the default range is 90 days either side of today
    var presets = { both: [from, to], last: [from, today], next: [today, to] };
    dialog.querySelectorAll("button[data-preset]").forEach(function (button) {
      button.addEventListener("click", function () {
        var range = presets[button.getAttribute("data-preset")];
        startInput.value = range[0];
        endInput.value = range[1];
        dialog.querySelectorAll("button[data-preset]").forEach(function (b) {
          b.setAttribute("aria-pressed", b === button ? "true" : "false");
        });
        showPlan(dialog.getAttribute("data-org"));
      });
    });
    [startInput, endInput].forEach(function (input) {
      input.addEventListener("change", function () {
        dialog.querySelectorAll("button[data-preset]").forEach(function (b) {
          b.setAttribute("aria-pressed", "false");
        });
        showPlan(dialog.getAttribute("data-org"));
      });
    });
  }

  function setUpSyncAll() {
    var panel = document.getElementById("run-progress");
    if (!panel) return;
    document.getElementById("run-done").hidden = true;
    var retry = document.getElementById("run-retry");
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
    if (retry) retry.addEventListener("click", function () { open.click(); });
    document.getElementById("sync-all-cancel").addEventListener("click", function () {
      dialog.close();
      open.focus();
    });
    setUpPresets(dialog);
    document.getElementById("sync-all-start").addEventListener("click", function () {
      var start = document.getElementById("sync-start").value;
      var end = document.getElementById("sync-end").value;
      var problem = rangeProblem(start, end);
      if (problem) {
        errorBox.textContent = problem;
        return;
      }
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
