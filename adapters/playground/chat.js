// Chat: a streamed conversation. Tokens are rendered as they arrive (markdown, safely); Stop
// aborts the request, which closes the connection: the server stops generating at once. An
// attached image goes with the message as an image_url part (a data: URL), for vision models.
import { call, events, number, showError, value } from "./api.js";
import { render } from "./markdown.js";

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The current weather in a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["city"],
    },
  },
};

export function setUpChat() {
  const form = document.getElementById("chat-form");
  const log = document.getElementById("chat-log");
  const message = document.getElementById("chat-message");
  const image = document.getElementById("chat-image");
  const send = document.getElementById("chat-send");
  const stop = document.getElementById("chat-stop");
  const format = document.getElementById("chat-format");
  const schemaParts = document.querySelectorAll(".schema");
  let history = [];
  let running = null;

  const showSchema = () => schemaParts.forEach((part) => (part.hidden = format.value !== "json_schema"));
  format.addEventListener("change", showSchema);
  showSchema();

  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => running && running.abort());
  document.getElementById("chat-clear").addEventListener("click", () => {
    history = [];
    log.replaceChildren();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = message.value.trim();
    if (!text || running) return;
    showError(null);
    let body;
    let picture = null;
    try {
      picture = image.files.length ? await dataUrl(image.files[0]) : null;
      body = request(text, picture, history);
    } catch (error) {
      showError(error);
      return;
    }
    const asked = append(log, "user");
    asked.textContent = text;
    if (picture) {
      const shown = document.createElement("img");
      shown.src = picture;
      shown.alt = "the attached image";
      shown.className = "attached";
      asked.append(shown);
    }
    const answer = append(log, "assistant");
    message.value = "";
    image.value = "";
    running = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    let content = "";
    const calls = [];
    try {
      const response = await call("v1/chat/completions", { json: body, signal: running.signal });
      for await (const chunk of events(response)) {
        const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta : null;
        if (!delta) continue;
        if (delta.content) {
          content += delta.content;
          render(content, answer);
        }
        for (const piece of delta.tool_calls || []) {
          const entry = (calls[piece.index] ||= { name: "", arguments: "" });
          if (piece.function && piece.function.name) entry.name += piece.function.name;
          if (piece.function && piece.function.arguments) entry.arguments += piece.function.arguments;
          showCalls(calls, answer, content);
        }
      }
      history = [...body.messages.filter((m) => m.role !== "system"), { role: "assistant", content }];
    } catch (error) {
      showError(error);
      if (error.name === "AbortError") answer.dataset.stopped = "true";
    } finally {
      answer.dataset.done = "true";
      running = null;
      send.disabled = false;
      stop.disabled = true;
    }
  });

  function request(text, picture, previous) {
    const system = value("chat-system");
    const content = picture
      ? [{ type: "text", text }, { type: "image_url", image_url: { url: picture } }]
      : text;
    const messages = [...(system ? [{ role: "system", content: system }] : []), ...previous, { role: "user", content }];
    const body = {
      model: value("chat-model"),
      messages,
      stream: true,
      temperature: number("chat-temperature"),
      max_tokens: number("chat-max-tokens"),
    };
    if (format.value === "json_object") body.response_format = { type: "json_object" };
    if (format.value === "json_schema") {
      let schema;
      try {
        schema = JSON.parse(value("chat-schema"));
      } catch (error) {
        throw new Error(`The JSON schema is not valid JSON: ${error.message}`);
      }
      body.response_format = { type: "json_schema", json_schema: { name: "answer", schema, strict: true } };
    }
    if (document.getElementById("chat-tools").checked) body.tools = [WEATHER_TOOL];
    return body;
  }
}

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`The image could not be read: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

function append(log, role) {
  const item = document.createElement("div");
  item.className = `message ${role}`;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("div");
  body.className = "content";
  item.append(label, body);
  log.append(item);
  return body;
}

function showCalls(calls, into, content) {
  render(content, into);
  for (const entry of calls) {
    const line = document.createElement("div");
    line.className = "call";
    line.textContent = `${entry.name}(${entry.arguments})`;
    into.append(line);
  }
}
