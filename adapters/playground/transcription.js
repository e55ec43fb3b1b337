// Transcription: an uploaded file, or a recording from the microphone (MediaRecorder), to text
// with each segment's start and end.
import { call, showError, value } from "./api.js";

export function setUpTranscription() {
  const form = document.getElementById("transcription-form");
  const file = document.getElementById("transcription-file");
  const record = document.getElementById("transcription-record");
  const segments = document.getElementById("transcription-segments");
  let recorded = null;
  let recorder = null;

  file.addEventListener("change", () => (recorded = null));
  record.addEventListener("click", async () => {
    showError(null);
    if (recorder) {
      recorder.stop();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
      recorder.addEventListener("stop", () => {
        stream.getTracks().forEach((track) => track.stop());
        recorded = new Blob(chunks, { type: recorder.mimeType });
        recorder = null;
        record.textContent = "Record from the microphone";
        form.requestSubmit();
      });
      recorder.start();
      record.textContent = "Stop recording and transcribe";
    } catch (error) {
      showError(new Error(`The microphone is not available: ${error.message}`));
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    const audio = recorded || file.files[0];
    if (!audio) {
      showError(new Error("Choose an audio file, or record one."));
      return;
    }
    const data = new FormData();
    data.append("file", audio, audio.name || "recording.webm");
    data.append("model", value("transcription-model"));
    data.append("response_format", "verbose_json");
    data.append("timestamp_granularities[]", "segment");
    segments.replaceChildren();
    segments.setAttribute("aria-busy", "true");
    try {
      const response = await call(`v1/audio/${value("transcription-task")}`, { form: data });
      const transcript = await response.json();
      for (const segment of transcript.segments || [{ start: 0, end: transcript.duration || 0, text: transcript.text }]) {
        const item = document.createElement("li");
        const time = document.createElement("span");
        time.className = "time";
        time.textContent = `${clock(segment.start)} - ${clock(segment.end)}`;
        item.append(time, segment.text.trim());
        segments.append(item);
      }
    } catch (error) {
      showError(error);
    } finally {
      segments.setAttribute("aria-busy", "false");
    }
  });
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}
