// The admin page of `migrate serve`: status, history, the lock, and a run
// with its progress live. Everything goes through the admin API with the
// token typed in, kept in sessionStorage and sent as the Bearer header.
// Text from the server is only ever set as text, never parsed as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "migrate.admin.token";
  const $ = (id) => document.getElementById(id);
  // The timer of a refresh asked for by the stream, if one is waiting.
  let refreshing = null;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    session: null,
    status: null,
    stream: null,
    // A run this page asked for and whose answer it waits for: its end is
    // shown from that answer, not from the stream.
    asking: false,
    // What the dialog is for: "run" or "approve".
    dialogFor: null,
    // Counts sign-ins and sign-outs: an answer to an older one is dropped.
    epoch: 0,
    // Runs whose end this page has shown (from its own request's answer or
    // from the stream), by number.
    shownRuns: new Set(),
    // A run's end seen on the stream while this page's own request was
    // still waiting for its answer.
    finishedWhileAsking: null,
    // The event stream's reconnect attempts since it last said hello.
    attempts: 0,
    hellos: 0,
  };

  // ---- helpers ----------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  // RFC 3339 to "2026-12-01 14:03:22".
  function when(text) {
    if (!text) return "";
    return String(text).slice(0, 19).replace("T", " ");
  }

  function took(nanos) {
    if (nanos === null || nanos === undefined) return "";
    const ms = nanos / 1e6;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  }

  function label(version, name) {
    return name ? `${version}_${name}` : String(version);
  }

  // The CLI's words for a status row.
  function statusLabel(migration) {
    if (migration.drift === "changed") return "CHANGED";
    if (migration.drift === "missing") return "MISSING";
    return { completed: "APPLIED", pending: "PENDING", failed: "FAILED" }[migration.status] || String(migration.status).toUpperCase();
  }

  function retryAfter(response) {
    const seconds = Number(response.retryAfter);
    return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
  }

  async function api(method, path, body) {
    if (!state.token) throw new Error("signed out");
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return {
      status: response.status,
      data,
      retryAfter: response.headers.get("Retry-After"),
      run: Number(response.headers.get("Migrate-Run")) || null,
    };
  }

  function setLive(text) {
    if ($("live").textContent !== text) $("live").textContent = text;
  }

  // What a refusal says, in a sentence.
  function refusalText(response) {
    const data = response.data || {};
    if (response.status === 429) {
      const wait = retryAfter(response);
      return `${data.error || "Too many requests"}: try again in ${wait ? plural(wait, "second", "seconds") : "a while"}.`;
    }
    if (data.error && data.details) return `${data.error}: ${data.details}`;
    return data.error || data.details || `The server answered ${response.status}.`;
  }

  // ---- signing in and out -------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const input = $("token");
    const error = $("sign-in-error");
    const typed = input.value.trim();
    show(error, false);
    if (!typed) {
      error.textContent = "Type the token first.";
      show(error, true);
      input.focus();
      return;
    }
    state.token = typed;
    $("sign-in-button").disabled = true;
    let response;
    try {
      response = await api("GET", "/admin/session");
    } catch (err) {
      response = null;
      error.textContent = `The server did not answer: ${err.message}`;
    }
    $("sign-in-button").disabled = false;
    if (response && response.status === 200) {
      sessionStorage.setItem(TOKEN_KEY, typed);
      input.value = "";
      enter(response.data);
      return;
    }
    state.token = null;
    if (response) {
      if (response.status === 403 && response.data && response.data.error === "forbidden" && /token/.test(response.data.details || "")) {
        error.textContent = "That token is not valid.";
      } else {
        error.textContent = refusalText(response);
      }
    }
    show(error, true);
    input.select();
    input.focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.epoch += 1;
    state.token = null;
    state.session = null;
    state.status = null;
    state.asking = false;
    state.dialogFor = null;
    state.finishedWhileAsking = null;
    if (refreshing) clearTimeout(refreshing);
    refreshing = null;
    if (state.stream) state.stream.abort();
    state.stream = null;
    closeDialog();
    show($("approval"), false);
    for (const id of ["migrations", "history"]) $(id).tBodies[0].replaceChildren();
    $("progress").replaceChildren();
    $("result").replaceChildren();
    show($("run-section"), false);
    show($("console"), false);
    show($("who"), false);
    show($("sign-in"), true);
    const error = $("sign-in-error");
    error.textContent = message || "";
    show(error, Boolean(message));
    $("token").focus();
  }

  function enter(session) {
    state.epoch += 1;
    state.session = session;
    state.hellos = 0;
    state.attempts = 0;
    $("who-name").textContent = session.token;
    $("who-role").textContent = session.role === "run" ? "may run migrations" : "may read only";
    show($("who"), true);
    show($("sign-in"), false);
    show($("console"), true);
    // A read token is shown no run button at all.
    show($("run"), session.role === "run");
    $("run").textContent = session.require_approval ? "Request a run" : "Run pending migrations";
    const note = $("run-note");
    if (session.role !== "run") {
      note.textContent = "This token may read the status and the history; it cannot run migrations.";
    } else if (session.require_approval) {
      note.textContent = "Runs need a second run token's approval on this server.";
    } else {
      note.textContent = "";
    }
    show(note, Boolean(note.textContent));
    $("main").focus();
    refresh();
    listen();
  }

  // ---- status and history -------------------------------------------------

  async function refresh() {
    const error = $("load-error");
    const epoch = state.epoch;
    let status, history, lock;
    try {
      [status, history, lock] = await Promise.all([
        api("GET", "/admin/migrations/status"),
        api("GET", "/admin/migrations/history"),
        api("GET", "/admin/migrations/lock"),
      ]);
    } catch (err) {
      if (epoch !== state.epoch) return false;
      error.textContent = `The server did not answer: ${err.message}`;
      show(error, true);
      return false;
    }
    // Signed out (or in as another) meanwhile: this answer is not for now.
    if (epoch !== state.epoch) return false;
    if (status.status === 401 || (status.status === 403 && status.data && status.data.error === "forbidden" && /token/.test(status.data.details || ""))) {
      signOut("The token is no longer accepted: sign in again.");
      return false;
    }
    if (status.status !== 200) {
      error.textContent = refusalText(status);
      show(error, true);
      return false;
    }
    show(error, false);
    state.status = status.data;
    renderStatus(status.data);
    if (history.status === 200) renderHistory(history.data);
    renderLock(lock.status === 200 ? lock.data : null);
    return true;
  }

  function renderStatus(status) {
    $("target").textContent = status.database.target;
    $("tracking").textContent = `${status.database.schema}.${status.database.table}`;
    $("checked").textContent = new Date().toISOString().slice(0, 19).replace("T", " ") + " UTC";
    $("summary").textContent = status.summary;
    const rows = [];
    for (const m of status.all_migrations) {
      const text = statusLabel(m);
      rows.push(el("tr", { class: `row-${text.toLowerCase()}` },
        el("td", { class: "mono" }, m.version),
        el("td", {}, m.name),
        el("td", {}, el("span", { class: `badge ${text.toLowerCase()}` }, text)),
        el("td", { class: "mono" }, when(m.applied_at)),
        el("td", { class: "num" }, took(m.duration))));
      if (m.error) {
        rows.push(el("tr", { class: "error-row" },
          el("td", { colspan: "5" }, el("span", { class: "sr-only" }, `${m.version} failed: `), el("pre", {}, m.error))));
      }
    }
    $("migrations").tBodies[0].replaceChildren(...rows);
    const run = $("run");
    const pending = status.pending_count;
    run.disabled = pending === 0;
    run.setAttribute("aria-describedby", "summary");
    renderApproval(status.approval);
  }

  function renderLock(lock) {
    const shown = $("lock");
    if (!lock) {
      shown.textContent = "unknown (the server did not say)";
      shown.className = "";
      return;
    }
    shown.textContent = lock.held ? `held by ${lock.description}` : "free";
    shown.className = lock.held ? "held" : "";
  }

  function renderHistory(history) {
    const entries = [...history.migrations].reverse();
    show($("history-empty"), entries.length === 0);
    show($("history").parentElement, entries.length > 0);
    $("history").tBodies[0].replaceChildren(...entries.map((e) => el("tr", {},
      el("td", { class: "num" }, e.id),
      el("td", { class: "mono" }, when(e.applied_at)),
      el("td", {}, e.event),
      el("td", { class: "mono" }, e.version),
      el("td", {}, e.name),
      el("td", { class: "num" }, took(e.duration)),
      el("td", {}, e.applied_by || ""),
      el("td", { class: "wrap" }, e.error || e.note || ""))));
  }

  function renderApproval(approval) {
    const section = $("approval");
    const session = state.session;
    if (!approval || !session || session.role !== "run") {
      show(section, false);
      return;
    }
    const minutes = Math.max(1, Math.round(approval.expires_in_seconds / 60));
    const mine = approval.requested_by === session.token;
    $("approval-text").textContent = mine
      ? `You asked for a run (${approval.approval}). It waits for another run token to approve it, for about ${plural(minutes, "minute", "minutes")} more.`
      : `${approval.requested_by} asked for a run (${approval.approval}). Approve it to start it; the request lapses in about ${plural(minutes, "minute", "minutes")}.`;
    show($("approve"), !mine);
    show(section, true);
  }

  // ---- the confirmation -------------------------------------------------

  async function openRunDialog() {
    // What will run is what the server says now, not what was shown before.
    if (!(await refresh())) return;
    const status = state.status;
    const pending = status.pending_migrations;
    if (pending.length === 0) {
      showResult("ok", "Nothing to run", "There are no pending migrations.", null, true);
      return;
    }
    openDialog("run", pending.map((m) => ({ version: m.version, name: m.name, retry: m.status === "failed" })));
  }

  async function openApproveDialog() {
    if (!(await refresh())) return;
    const approval = state.status.approval;
    if (!approval) {
      showResult("error", "Nothing to approve", "The request was used or lapsed.", null, true);
      return;
    }
    const byVersion = new Map(state.status.all_migrations.map((m) => [m.version, m]));
    const pending = new Set(state.status.pending_migrations.map((m) => m.version));
    const versions = approval.migrations || [...pending];
    openDialog("approve", versions.map((v) => {
      const m = byVersion.get(v) || {};
      return { version: v, name: m.name, retry: m.status === "failed", gone: !pending.has(v) };
    }), approval);
  }

  function openDialog(purpose, steps, approval) {
    state.dialogFor = { purpose, steps, approval };
    const n = steps.length;
    const approving = purpose === "approve";
    $("confirm-title").textContent = approving
      ? `Approve the run ${approval.requested_by} asked for?`
      : `Run ${plural(n, "pending migration", "pending migrations")}?`;
    $("confirm-text").textContent = approving
      ? `Approving starts it now. It applies ${plural(n, "migration", "migrations")}, in this order, and nothing else:`
      : `These run now, in this order, and nothing else${state.session.require_approval ? ", once another run token approves" : ""}:`;
    $("confirm-list").replaceChildren(...steps.map((s) =>
      el("li", {}, el("span", { class: "mono" }, label(s.version, s.name)),
        s.retry ? " (failed before: tried again)" : null,
        s.gone ? " (no longer pending: will not run)" : null)));
    const scripts = state.status.bootstrap_scripts || [];
    $("confirm-bootstrap").textContent = scripts.length
      ? `Then the bootstrap ${plural(scripts.length, "script", "scripts")}: ${scripts.join(", ")}.`
      : "";
    show($("confirm-bootstrap"), scripts.length > 0);
    $("confirm-run").textContent = approving ? "Approve and run" : state.session.require_approval ? "Request the run" : "Run migrations";
    const dialog = $("confirm");
    dialog.showModal();
    // The safe choice has the focus.
    $("confirm-cancel").focus();
  }

  function closeDialog() {
    const dialog = $("confirm");
    if (dialog.open) dialog.close();
  }

  function cancelDialog() {
    const purpose = state.dialogFor ? state.dialogFor.purpose : "run";
    state.dialogFor = null;
    closeDialog();
    (purpose === "approve" ? $("approve") : $("run")).focus();
  }

  async function confirmed() {
    const chosen = state.dialogFor;
    state.dialogFor = null;
    closeDialog();
    if (!chosen) return;
    const expect = chosen.steps.filter((s) => !s.gone).map((s) => s.version);
    const epoch = state.epoch;
    startProgress();
    state.asking = true;
    state.finishedWhileAsking = null;
    let response = null;
    let failure = null;
    try {
      response = chosen.purpose === "approve"
        ? await api("POST", "/admin/migrations/approve", { approval: chosen.approval.approval, expect })
        : await api("POST", "/admin/migrations/run", { confirm: true, expect });
    } catch (err) {
      failure = err;
    }
    if (epoch !== state.epoch) return;
    state.asking = false;
    const seen = state.finishedWhileAsking;
    state.finishedWhileAsking = null;
    if (response) {
      if (response.run) state.shownRuns.add(response.run);
      answered(response, true);
    } else if (seen) {
      // The answer was lost on the way, but the stream said how it ended.
      state.shownRuns.add(seen.run);
      answered({ status: seen.status, data: seen.body, retryAfter: null }, true);
    } else {
      showResult("error", "No answer", `The server did not answer (${failure.message}). A run that started goes on: check the status.`, null, true);
    }
    await refresh();
  }

  // ---- the run --------------------------------------------------------------

  function startProgress() {
    show($("run-section"), true);
    $("progress").replaceChildren();
    $("result").replaceChildren();
    $("result").className = "result";
  }

  function progressLine(key, text, kind) {
    const list = $("progress");
    let line = key ? document.getElementById(key) : null;
    if (!line) {
      line = el("li", { id: key || null });
      list.append(line);
    }
    line.className = kind || "";
    line.textContent = text;
    return line;
  }

  // Shows a run's end. `own`: this page asked for it, and the focus moves
  // to it; another client's run is only announced.
  function showResult(kind, title, text, extra, own) {
    show($("run-section"), true);
    const result = $("result");
    result.className = `result ${kind}`;
    result.setAttribute("role", kind === "error" ? "alert" : "status");
    const parts = [el("h3", {}, title), text ? el("p", {}, text) : null, ...(extra || [])];
    result.replaceChildren(...parts.filter((part) => part !== null && part !== undefined));
    if (own) result.focus();
  }

  // A run's answer, from the response or from the stream (same body).
  function answered(response, own) {
    const data = response.data || {};
    const applied = (data.applied_migrations || []).map((m) => `${label(m.version, m.name)} (${took(m.duration)})`);
    const appliedList = applied.length ? el("ul", { class: "plain" }, ...applied.map((a) => el("li", {}, a))) : null;
    switch (response.status) {
      case 200:
        if (data.status === "up_to_date") {
          showResult("ok", "Nothing to apply", "There were no pending migrations.", null, own);
        } else {
          showResult("ok", `Applied ${plural(data.applied_count, "migration", "migrations")}`, null, [appliedList], own);
        }
        return;
      case 202:
        showResult("notice", "Waiting for approval", `The run (${data.approval}) starts when another run token approves it, within ${plural(Math.round(data.expires_in_seconds / 60), "minute", "minutes")}.`, null, own);
        return;
      case 409:
        if (data.holder !== undefined) {
          showResult("error", "The migration lock is held", `${data.details}. Nothing was run: try again when it is free.`, null, own);
        } else {
          showResult("error", data.error || "Conflict", data.details || "", null, own);
        }
        return;
      case 429:
        showResult("error", data.error || "Too many runs", refusalText(response), null, own);
        return;
      case 401:
        signOut("The token is no longer accepted: sign in again.");
        return;
      default: {
        const extra = [];
        if (data.details) extra.push(el("pre", { class: "details" }, data.details));
        if (applied.length) extra.push(el("p", {}, "These committed before it and stay applied:"), appliedList);
        showResult("error", data.error || `The server answered ${response.status}`, null, extra, own);
      }
    }
  }

  // ---- live events ----------------------------------------------------------

  function onEvent(name, data) {
    const key = data.version !== undefined ? `run-${data.run}-${data.version}` : null;
    switch (name) {
      case "hello":
        setLive("Live updates on.");
        state.attempts = 0;
        state.hellos += 1;
        // Back after a break: what happened meanwhile is in the tables.
        if (state.hellos > 1) refresh();
        break;
      case "lagged":
        refresh();
        break;
      case "run_started":
        if (state.shownRuns.has(data.run)) break;
        startProgress();
        progressLine(`run-${data.run}`, `Run started by ${data.actor}.`, "info");
        break;
      case "plan":
        progressLine(`run-${data.run}-plan`, `Applying ${plural(data.migrations.length, "migration", "migrations")}${data.bootstrap_scripts.length ? ` and ${plural(data.bootstrap_scripts.length, "bootstrap script", "bootstrap scripts")}` : ""}.`, "info");
        break;
      case "migration_started":
        progressLine(key, `${label(data.version, data.name)}: running (${data.index + 1} of ${data.total})`, "running");
        break;
      case "migration_blocked":
        progressLine(key, `${label(data.version, data.name)}: waiting for locks held by ${data.blockers.join("; ")}`, "running");
        break;
      case "migration_retrying":
        progressLine(key, `${label(data.version, data.name)}: lock_timeout, trying again (attempt ${data.attempt + 1} of ${data.attempts})`, "running");
        break;
      case "migration_applied":
        progressLine(key, `${label(data.version, data.name)}: applied in ${took(data.duration_ms * 1e6)}`, "applied");
        refreshSoon();
        break;
      case "migration_failed":
        progressLine(key, `${label(data.version, data.name)}: failed: ${data.error}`, "failed");
        refreshSoon();
        break;
      case "bootstrap_started":
        progressLine(`run-${data.run}-b-${data.script}`, `bootstrap ${data.script}: running`, "running");
        break;
      case "bootstrap_ran":
        progressLine(`run-${data.run}-b-${data.script}`, `bootstrap ${data.script}: ran in ${took(data.duration_ms * 1e6)}`, "applied");
        break;
      case "run_finished":
        if (state.shownRuns.has(data.run)) break;
        if (state.asking) {
          // Shown from the request's own answer, or from this if it is lost.
          state.finishedWhileAsking = data;
          break;
        }
        state.shownRuns.add(data.run);
        answered({ status: data.status, data: data.body, retryAfter: null }, false);
        refresh();
        break;
      case "approval_requested":
        refresh();
        break;
      default:
        break;
    }
  }

  // The tables follow a run as its migrations commit: one read at a time,
  // however fast the events come.
  function refreshSoon() {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      await refresh();
      refreshing = null;
    }, 200);
  }

  // Server-sent events read with fetch: EventSource cannot send the token
  // as a header, and it must not go in the URL.
  async function listen() {
    if (state.stream) state.stream.abort();
    const controller = new AbortController();
    state.stream = controller;
    while (state.stream === controller && state.token) {
      try {
        const response = await fetch("/admin/migrations/events", {
          headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
          cache: "no-store",
          credentials: "omit",
          signal: controller.signal,
        });
        if (response.status === 401 || response.status === 403) {
          // The token is no longer taken (the server restarted with other
          // tokens): asking again would only count as guessing.
          signOut("The token is no longer accepted: sign in again.");
          return;
        }
        if (response.status === 429) {
          const wait = retryAfter({ retryAfter: response.headers.get("Retry-After") }) || 10;
          setLive(`Live updates paused: asked too often; again in ${plural(wait, "second", "seconds")}.`);
          await new Promise((resolve) => setTimeout(resolve, wait * 1000));
          continue;
        }
        if (response.status === 503) {
          // Too many streams open on the server: wait as it says.
          const wait = retryAfter({ retryAfter: response.headers.get("Retry-After") }) || 30;
          setLive(`Live updates paused: the server has too many open; again in ${plural(wait, "second", "seconds")}.`);
          await new Promise((resolve) => setTimeout(resolve, wait * 1000));
          continue;
        }
        if (response.status !== 200 || !response.body) throw new Error(`answered ${response.status}`);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = "message";
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) {
              try {
                onEvent(name, JSON.parse(data));
              } catch (_) {
                // A line this page does not understand is left out.
              }
            }
          }
        }
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      if (state.stream !== controller) return;
      setLive("Live updates interrupted: connecting again…");
      // 1, 2, 4 ... 30 s, spread so that tabs do not all come back at once.
      state.attempts += 1;
      const delay = Math.min(30000, 1000 * 2 ** (state.attempts - 1)) * (0.5 + Math.random());
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  // ---- wiring -------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", async () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("refresh").addEventListener("click", refresh);
    $("run").addEventListener("click", openRunDialog);
    $("approve").addEventListener("click", openApproveDialog);
    $("confirm-cancel").addEventListener("click", cancelDialog);
    // Escape closes the dialog: nothing runs.
    $("confirm").addEventListener("cancel", (event) => {
      event.preventDefault();
      cancelDialog();
    });
    $("confirm-run").addEventListener("click", confirmed);
    // A tab out of sight gives its stream back (a browser keeps about six
    // connections to a server), and catches up when it is looked at again.
    document.addEventListener("visibilitychange", () => {
      if (!state.session) return;
      if (document.hidden) {
        if (state.stream) state.stream.abort();
        state.stream = null;
      } else if (!state.stream) {
        state.hellos = 1;
        refresh();
        listen();
      }
    });
    if (state.token) {
      // Signed in earlier in this tab.
      let response = null;
      try {
        response = await api("GET", "/admin/session");
      } catch (_) {
        response = null;
      }
      if (response && response.status === 200) {
        enter(response.data);
        return;
      }
      if (response && (response.status === 401 || response.status === 403)) {
        signOut(refusalText(response));
        return;
      }
      // Throttled, or the server restarting: the token is kept for a retry.
      const error = $("sign-in-error");
      error.textContent = `${response ? refusalText(response) : "The server did not answer."} Sign in again, or reload to retry.`;
      show(error, true);
      $("token").focus();
      return;
    }
    $("token").focus();
  });
})();
