// Calls to the service's /v1 API, with the optional API key, and its errors as
// RFC 9457 problems. Paths are relative ("v1/models"), so they resolve against the
// page's own URL: the same origin, and the same prefix behind a proxy.

const KEY_STORAGE = "gmm-explorer-api-key";

/** An error response (or a network failure) carrying the problem+json body. */
export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title);
    this.problem = problem;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORAGE, value);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/**
 * One request. `json` is sent as application/json; `body` as is, with
 * `contentType`. Answers the parsed JSON body (or the Response when `raw`).
 */
export async function request(method, path, { json, body, contentType, raw } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (contentType) {
    headers["Content-Type"] = contentType;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (err) {
    throw new ApiError({ title: "Network error", detail: `${method} ${path}: ${err.message}` });
  }
  if (!response.ok) throw new ApiError(await readProblem(response));
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

async function readProblem(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object" && body.title) return body;
  } catch {
    // not JSON: a proxy's HTML error page, say; fall through
  }
  return { title: response.statusText || "Error", status: response.status, detail: text.slice(0, 300) };
}
