// api.js: the console's only door to the server. Every call goes to the
// page's own origin with the editor's key as a Bearer token, and every
// failure, including a network failure, becomes an ApiError with a message
// that can be shown to the editor as it is.

/** ApiError is a failed call: status 0 means the server was not reached. */
export class ApiError extends Error {
  constructor(status, code, message, field = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
  }

  /** isAuth reports whether the key was refused (401) or lacks a role (403). */
  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

/**
 * request sends one JSON request and returns the decoded body, or null for
 * 204. It throws ApiError for anything else.
 */
export async function request(key, method, path, body) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }

  let res;
  let text;
  try {
    res = await fetch(path, init);
    text = await res.text();
  } catch {
    throw new ApiError(0, "network", "Could not reach the nudge server (network error).");
  }

  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    const message = e.message || `The server answered ${res.status} ${res.statusText}`.trim() + ".";
    throw new ApiError(res.status, e.code || `http_${res.status}`, message, e.field || "");
  }
  if (res.status === 204) return null;
  if (data === null || typeof data !== "object") {
    throw new ApiError(res.status, "bad_response", `The server sent an answer the console cannot read (${method} ${path}).`);
  }
  return data;
}
