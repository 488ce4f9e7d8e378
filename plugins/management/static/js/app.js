// The shell: login, navigation between sections (location.hash), polling the current section,
// and one place that shows API errors and notices.

import { ApiError, auth, get } from "./api.js";
import { h } from "./dom.js";
import * as admin from "./pages/admin.js";
import * as connections from "./pages/connections.js";
import * as exchanges from "./pages/exchanges.js";
import * as overview from "./pages/overview.js";
import * as queues from "./pages/queues.js";

const $ = (id) => document.getElementById(id);

// section -> page module; a page module exports mount(view, ctx, params) -> {refresh}
const SECTIONS = {
  overview: overview.overviewPage,
  connections: connections.connectionsPage,
  channels: connections.channelsPage,
  exchanges: exchanges.exchangesPage,
  queues: queues.queuesPage,
  admin: admin.adminPage,
};
const DETAIL = { exchanges: exchanges.exchangePage, queues: queues.queuePage };

/** Human text for an API error, by status as RabbitMQ's API uses them. */
export function describe(error) {
  if (!(error instanceof ApiError)) return `Error: ${error.message ?? error}`;
  const reason = error.reason || "";
  switch (error.status) {
    case 0:
      return `Cannot reach the broker: ${reason}`;
    case 400:
      return `Bad request: ${reason}`;
    case 401:
      return `Not authorised: ${reason}`;
    case 403:
      return `Access refused: ${reason}`;
    case 404:
      return `Not found: ${reason}`;
    default:
      return `Error ${error.status}: ${reason}`;
  }
}

const ctx = {
  me: null,
  overview: null,
  vhosts: [],
  vhost: sessionStorage.getItem("warrenmq.vhost") ?? "",
  is(tag) {
    return this.me?.tags.includes(tag) ?? false;
  },
  /** Can see every connection and channel, not only its own (RabbitMQ's rule). */
  seesAll() {
    return this.is("administrator") || this.is("monitoring");
  },
  notify(text) {
    $("notice").textContent = text;
  },
  fail(error) {
    return showError(error, false);
  },
  /** Run an action from a button or form: errors shown, notice on success, then a refresh. */
  async act(control, success, action) {
    if (control) control.disabled = true;
    clearError();
    ctx.notify("");
    try {
      const result = await action();
      const text = typeof success === "function" ? success(result) : success;
      if (text) ctx.notify(text);
      await refreshNow();
      return result;
    } catch (error) {
      await showError(error, false);
      return undefined;
    } finally {
      if (control) control.disabled = false;
    }
  },
  /** Go to another section; `notice` is shown there (a route change clears notices). */
  go(hash, notice = "") {
    pendingNotice = notice;
    location.hash = hash;
  },
};

let page = null;
let timer = null;
let errorFromPoll = false;
let pendingNotice = "";

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
  errorFromPoll = false;
}

async function showError(error, fromPoll) {
  if (error instanceof ApiError && error.status === 401 && error.path !== "whoami") {
    // a 401 may mean "not an administrator" (RabbitMQ answers so) or that the password went
    // away: ask who we are to tell which
    try {
      await get("whoami");
    } catch (again) {
      if (again instanceof ApiError && again.status === 401) {
        logout(`Logged out: ${again.reason || "the broker refused the credentials"}`);
        return;
      }
    }
  }
  $("error-text").textContent = describe(error);
  $("error").hidden = false;
  errorFromPoll = fromPoll;
}

async function refreshNow() {
  if (!page) return;
  const current = page;
  try {
    await current.refresh();
    if (errorFromPoll && current === page) clearError();
  } catch (error) {
    if (current === page) await showError(error, true);
  }
}

function schedule() {
  clearTimeout(timer);
  const seconds = Number($("interval").value);
  if (!seconds || !ctx.me) return;
  timer = setTimeout(async () => {
    if (!document.hidden) await refreshNow(); // a tab in the background costs the broker nothing
    schedule();
  }, seconds * 1000);
}

/** A path segment of the location's hash; one typed by hand may be malformed. */
function decoded(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function route() {
  if (!ctx.me) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decoded);
  let section = parts[0] || "overview";
  if (!SECTIONS[section] || (section === "admin" && !ctx.is("administrator"))) section = "overview";
  const mount = parts.length >= 3 && DETAIL[section] ? DETAIL[section] : SECTIONS[section];
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clearError();
  ctx.notify(pendingNotice);
  pendingNotice = "";
  const view = $("view");
  view.replaceChildren();
  page = mount(view, ctx, { vhost: parts[1], name: parts.slice(2).join("/") });
  refreshNow().then(schedule);
}

async function loadContext() {
  const [me, overviewData, vhosts] = await Promise.all([
    get("whoami"),
    get("overview"),
    get("vhosts"),
  ]);
  const tags = Array.isArray(me.tags) ? me.tags : String(me.tags || "").split(/[,\s]+/);
  ctx.me = { name: me.name, tags: tags.filter(Boolean) };
  ctx.overview = overviewData;
  ctx.vhosts = vhosts.map((v) => v.name).sort();
  if (ctx.vhost && !ctx.vhosts.includes(ctx.vhost)) ctx.vhost = "";
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("session").hidden = false;
  $("whoami").textContent = ctx.me.name;
  const o = ctx.overview;
  $("product").textContent = [o.product_name, o.product_version].filter(Boolean).join(" ");
  for (const link of document.querySelectorAll("nav a[data-needs]")) {
    link.hidden = !ctx.is(link.dataset.needs);
  }
  const filter = $("vhost-filter");
  filter.replaceChildren(
    h("option", { value: "" }, "All"),
    ...ctx.vhosts.map((v) => h("option", { value: v, selected: v === ctx.vhost }, v)),
  );
  route();
}

function showLogin(message = "") {
  clearTimeout(timer);
  page = null;
  ctx.me = null;
  $("view").replaceChildren();
  $("app").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-password").value = "";
  $("login-user").focus();
}

function logout(message = "") {
  auth.clear();
  showLogin(message);
}

async function login(event) {
  event.preventDefault();
  const button = event.submitter;
  if (button) button.disabled = true;
  $("login-error").textContent = "";
  auth.set($("login-user").value, $("login-password").value);
  try {
    await loadContext();
    showApp();
  } catch (error) {
    auth.clear();
    $("login-error").textContent = loginFailure(error);
  } finally {
    if (button) button.disabled = false;
  }
}

function loginFailure(error) {
  if (error instanceof ApiError && error.status === 401) {
    const reason = error.reason && error.reason !== "Login failed" ? error.reason : "";
    return reason
      ? `Login failed: ${reason}`
      : "Login failed: wrong username or password.";
  }
  return `Login failed. ${describe(error)}`;
}

async function start() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  $("error-dismiss").addEventListener("click", clearError);
  $("vhost-filter").addEventListener("change", (event) => {
    ctx.vhost = event.target.value;
    sessionStorage.setItem("warrenmq.vhost", ctx.vhost);
    route();
  });
  const interval = $("interval");
  interval.value = sessionStorage.getItem("warrenmq.interval") ?? "5";
  interval.addEventListener("change", () => {
    sessionStorage.setItem("warrenmq.interval", interval.value);
    schedule();
  });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && ctx.me) refreshNow().then(schedule);
  });
  if (!auth.get()) return showLogin();
  try {
    await loadContext();
    showApp();
  } catch (error) {
    auth.clear();
    showLogin(error instanceof ApiError && error.status === 401 ? "" : describe(error));
  }
}

start();
