// Tokenize: a text in, the model's own tokens out, each with its id and its piece.
import { call, showError, value } from "./api.js";

export function setUpTokenize() {
  const form = document.getElementById("tokenize-form");
  const list = document.getElementById("tokenize-tokens");
  const count = document.getElementById("tokenize-count");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    try {
      const body = { model: value("tokenize-model"), content: value("tokenize-input"), with_pieces: true };
      const answer = await (await call("tokenize", { json: body })).json();
      count.textContent = `${answer.count} tokens`;
      list.replaceChildren(
        ...answer.tokens.map(({ id, piece }) => {
          const item = document.createElement("li");
          item.textContent = `${id} ${JSON.stringify(piece)}`;
          return item;
        }),
      );
    } catch (error) {
      showError(error);
    }
  });
}
