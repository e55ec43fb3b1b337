// Images: a prompt, size, count and seed in; the images inline (b64_json) in a gallery.
import { call, number, showError, value } from "./api.js";

export function setUpImages() {
  const form = document.getElementById("images-form");
  const gallery = document.getElementById("images-gallery");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const body = {
      model: value("images-model"),
      prompt: value("images-prompt"),
      size: value("images-size"),
      n: number("images-n"),
      response_format: "b64_json",
    };
    const seed = number("images-seed");
    if (seed !== undefined) body.seed = seed;
    gallery.setAttribute("aria-busy", "true");
    try {
      const response = await call("v1/images/generations", { json: body });
      const answer = await response.json();
      answer.data.forEach((image, index) => {
        const figure = document.createElement("figure");
        const img = document.createElement("img");
        img.src = `data:image/png;base64,${image.b64_json}`;
        img.alt = `${body.prompt} (${index + 1} of ${answer.data.length})`;
        const caption = document.createElement("figcaption");
        caption.textContent = `${body.size}${seed !== undefined ? `, seed ${seed}` : ""}`;
        figure.append(img, caption);
        gallery.prepend(figure);
      });
    } catch (error) {
      showError(error);
    } finally {
      gallery.setAttribute("aria-busy", "false");
    }
  });
}
