// The playground's entry: tabs (keyboard: arrows, Home, End), the API key, the model list, and
// each panel's own module. Everything talks to the public OpenAI paths of this server.
import { apiKey, call, showError } from "./api.js";
import { setUpChat } from "./chat.js";
import { setUpEmbeddings } from "./embeddings.js";
import { setUpImages } from "./images.js";
import { setUpRerank } from "./rerank.js";
import { setUpSpeech } from "./speech.js";
import { setUpTokenize } from "./tokenize.js";
import { setUpTranscription } from "./transcription.js";

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab, focus = true) => {
    for (const other of tabs) {
      const chosen = other === tab;
      other.setAttribute("aria-selected", String(chosen));
      other.tabIndex = chosen ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", `#${tab.id.slice(4)}`);
  };
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
      if (event.key in moves) {
        event.preventDefault();
        select(tabs[(moves[event.key] + tabs.length) % tabs.length]);
      }
    });
  });
  const wanted = document.getElementById(`tab-${location.hash.slice(1)}`);
  if (wanted) select(wanted, false); // a link to a panel: shown, the focus left where it is
}

function setUpKey() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  input.value = apiKey.get();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    state.textContent = input.value.trim() ? "Key saved in this browser." : "Key removed.";
    loadModels();
  });
}

async function loadModels() {
  const list = document.getElementById("models");
  try {
    const response = await call("v1/models");
    const models = (await response.json()).data;
    list.replaceChildren(...models.map((model) => Object.assign(document.createElement("option"), { value: model.id })));
    showError(null);
  } catch (error) {
    showError(error); // a server with keys says 401 here until one is saved
  }
}

setUpTabs();
setUpKey();
setUpChat();
setUpSpeech();
setUpTranscription();
setUpImages();
setUpEmbeddings();
setUpRerank();
setUpTokenize();
loadModels();
document.body.dataset.ready = "true";
