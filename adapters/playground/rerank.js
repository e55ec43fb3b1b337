// Rerank: a query and a few documents in, the documents best first with their scores out.
import { call, showError, value } from "./api.js";

export function setUpRerank() {
  const form = document.getElementById("rerank-form");
  const table = document.getElementById("rerank-results");
  const said = document.getElementById("rerank-model-used");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const documents = value("rerank-documents").split("\n").map((s) => s.trim()).filter(Boolean);
    try {
      const body = { model: value("rerank-model"), query: value("rerank-query"), documents };
      const ranked = await (await call("v1/rerank", { json: body })).json();
      said.textContent = `Ranked by ${ranked.model}`;
      table.replaceChildren();
      const head = table.createTHead().insertRow();
      for (const name of ["Rank", "Score", "Document"]) {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = name;
        head.append(th);
      }
      const rows = table.createTBody();
      ranked.results.forEach((result, rank) => {
        const row = rows.insertRow();
        row.insertCell().textContent = String(rank + 1);
        row.insertCell().textContent = result.relevance_score.toFixed(3);
        row.insertCell().textContent = documents[result.index];
      });
    } catch (error) {
      showError(error);
    }
  });
}
