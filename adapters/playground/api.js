// Talking to the server: the key (kept in this browser's local storage, sent as Bearer), URLs
// relative to the page (so it works behind a path prefix), and the API's errors as they are.

const KEY = "stratus-api-key";
// The page is served at its base ("/" or "/stage/"): the API's paths are relative to it.
const base = new URL(".", location.href.endsWith("/") ? location.href : location.href + "/");

export const apiKey = {
  get: () => localStorage.getItem(KEY) || "",
  set: (value) => (value ? localStorage.setItem(KEY, value) : localStorage.removeItem(KEY)),
};

export function url(path) {
  return new URL(path, base).toString();
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error ? body.error : null;
    super(error && error.message ? error.message : `HTTP ${status}`);
    this.status = status;
    this.detail = error;
  }
}

export async function call(path, { json, form, signal, method } = {}) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets multipart's boundary
  }
  const response = await fetch(url(path), {
    method: method || (body === undefined ? "GET" : "POST"),
    headers,
    body,
    signal,
  });
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // not JSON: the status says it
    }
    throw new ApiError(response.status, payload);
  }
  return response;
}

// The `data:` events of a server-sent event stream, each parsed; "[DONE]" ends it. An error
// event (after the status was sent) is thrown as the API's error.
export async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(200, event);
        yield event;
      }
    }
  }
}

// The one error region: the API's message, type and code, as the API sent them.
export function showError(error) {
  const region = document.getElementById("error");
  if (!error || error.name === "AbortError") {
    region.hidden = true;
    region.textContent = "";
    return;
  }
  const detail = error.detail;
  const parts = [error.status ? `${error.status}: ${error.message}` : String(error.message || error)];
  if (detail && (detail.type || detail.code)) {
    parts.push(`type: ${detail.type || "-"}, code: ${detail.code || "-"}, param: ${detail.param || "-"}`);
  }
  region.textContent = parts.join("\n");
  region.hidden = false;
}

export function value(id) {
  return document.getElementById(id).value.trim();
}

export function number(id) {
  const text = value(id);
  return text === "" ? undefined : Number(text);
}
