// Speech: the audio plays as it streams (Media Source Extensions, for mp3 where the browser has
// them), else once it has all arrived; then it can be downloaded in the chosen format.
import { call, showError, value } from "./api.js";

const MEDIA = { mp3: "audio/mpeg", wav: "audio/wav", opus: "audio/ogg", aac: "audio/aac", flac: "audio/flac", pcm: "audio/pcm" };

export function setUpSpeech() {
  const form = document.getElementById("speech-form");
  const audio = document.getElementById("speech-audio");
  const download = document.getElementById("speech-download");
  let previous = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const format = value("speech-format");
    download.hidden = true;
    if (previous) URL.revokeObjectURL(previous);
    const body = { model: value("speech-model"), voice: value("speech-voice"), input: value("speech-input"), response_format: format };
    const streamable = format === "mp3" && window.MediaSource && MediaSource.isTypeSupported("audio/mpeg");
    try {
      const response = await call("v1/audio/speech", { json: body });
      const parts = streamable ? await playWhileStreaming(response, audio) : await whole(response);
      const blob = new Blob(parts, { type: MEDIA[format] });
      if (!streamable) {
        audio.src = previous = URL.createObjectURL(blob);
        if (format !== "pcm") audio.play().catch(() => {});
      }
      download.href = URL.createObjectURL(blob);
      download.download = `speech.${format}`;
      download.textContent = `Download speech.${format} (${Math.round(blob.size / 1024)} KB)`;
      download.hidden = false;
    } catch (error) {
      showError(error);
    }
  });
}

async function whole(response) {
  return [await response.arrayBuffer()];
}

async function playWhileStreaming(response, audio) {
  const source = new MediaSource();
  audio.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
  const buffer = source.addSourceBuffer("audio/mpeg");
  const appended = (data) =>
    new Promise((resolve) => {
      buffer.addEventListener("updateend", resolve, { once: true });
      buffer.appendBuffer(data);
    });
  const reader = response.body.getReader();
  const parts = [];
  let started = false;
  for (;;) {
    const { value: data, done } = await reader.read();
    if (done) break;
    parts.push(data);
    await appended(data);
    if (!started) {
      started = true;
      audio.play().catch(() => {});
    }
  }
  source.endOfStream();
  return parts;
}
