// The HTTP API client: RabbitMQ's management API paths, basic auth kept in sessionStorage
// (as RabbitMQ's own UI does), and errors carrying the status and the API's reason.

const KEY = "warrenmq.auth";

export class ApiError extends Error {
  constructor(status, reason, path) {
    super(reason);
    this.status = status;
    this.reason = reason;
    this.path = path;
  }
}

export const auth = {
  get() {
    return sessionStorage.getItem(KEY);
  },
  set(user, password) {
    // btoa takes Latin-1 only: encode UTF-8 first so any password works
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    sessionStorage.setItem(KEY, btoa(String.fromCharCode(...bytes)));
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

/** One path segment: vhost "/" is "%2F", names may hold any character. */
export const seg = (s) => encodeURIComponent(s);

/** The path of a vhost-scoped object, e.g. path("queues", "/", "q1") is "queues/%2F/q1". */
export const path = (kind, ...parts) => [kind, ...parts.map(seg)].join("/");

async function reasonOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return body.reason || body.error || text;
  } catch {
    return text || response.statusText;
  }
}

/**
 * Call the API; resolves to the parsed JSON body (or null when there is none). Throws ApiError
 * for an HTTP error status and for a network failure (status 0).
 */
export async function api(method, apiPath, body, headers = {}) {
  // credentials "omit": the browser adds no credentials of its own, and (as the Fetch standard
  // says) never opens its own login dialog on a 401 with WWW-Authenticate; ours is the form
  const init = { method, headers: { ...headers }, cache: "no-store", credentials: "omit" };
  const credentials = auth.get();
  if (credentials) init.headers.Authorization = `Basic ${credentials}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`api/${apiPath}`, init);
  } catch (error) {
    throw new ApiError(0, `cannot reach the broker (${error.message})`, apiPath);
  }
  if (!response.ok) throw new ApiError(response.status, await reasonOf(response), apiPath);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (p) => api("GET", p);
export const put = (p, body) => api("PUT", p, body ?? {});
export const post = (p, body) => api("POST", p, body ?? {});
export const del = (p, headers) => api("DELETE", p, undefined, headers);

/**
 * A list endpoint, asking for one page the way RabbitMQ 3.10 pages (page, page_size, name):
 * an API that pages answers {items, filtered_count, total_count}; one that does not answers a
 * plain list, which is filtered and cut here the same way.
 */
export async function getPage(p, { filter = "", pageSize = 500 } = {}) {
  const query = new URLSearchParams({ page: "1", page_size: String(pageSize) });
  if (filter) query.set("name", filter);
  const answer = await get(`${p}?${query}`);
  if (!Array.isArray(answer)) {
    return {
      items: answer.items ?? [],
      filtered: answer.filtered_count ?? (answer.items ?? []).length,
      total: answer.total_count ?? answer.item_count ?? (answer.items ?? []).length,
    };
  }
  const needle = filter.toLowerCase();
  const matching = needle
    ? answer.filter((item) => String(item.name).toLowerCase().includes(needle))
    : answer;
  return { items: matching.slice(0, pageSize), filtered: matching.length, total: answer.length };
}
