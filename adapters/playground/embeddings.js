// Embeddings: a few sentences in, their cosine similarities out, as a matrix.
import { call, showError, value } from "./api.js";

export function setUpEmbeddings() {
  const form = document.getElementById("embeddings-form");
  const table = document.getElementById("embeddings-matrix");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const sentences = value("embeddings-input").split("\n").map((s) => s.trim()).filter(Boolean);
    try {
      const response = await call("v1/embeddings", { json: { model: value("embeddings-model"), input: sentences } });
      const vectors = (await response.json()).data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
      table.replaceChildren();
      const head = table.createTHead().insertRow();
      head.append(document.createElement("td"));
      sentences.forEach((_, i) => {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = `#${i + 1}`;
        head.append(th);
      });
      const rows = table.createTBody();
      vectors.forEach((a, i) => {
        const row = rows.insertRow();
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = `#${i + 1} ${sentences[i]}`;
        row.append(th);
        vectors.forEach((b) => (row.insertCell().textContent = cosine(a, b).toFixed(3)));
      });
    } catch (error) {
      showError(error);
    }
  });
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb || 1);
}
