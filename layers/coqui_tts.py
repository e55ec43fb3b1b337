"""Coqui TTS (the `TTS` package of coqui-tts) behind the SpeechModel interface.

A model is a directory as Coqui saves one: `config.json` and a checkpoint (`.pth`), with the
speaker, language or d-vector files its config names beside them. Registry `parameters`:

    config: config.json         the config's file name in the directory
    checkpoint: model.pth       the checkpoint's, when the directory holds several
    device: cuda                default: CUDA when torch sees one, else the CPU
    language: en                for multilingual models (default: en if the model has it)
    voices: {alloy: p225, echo: p226}   request voice -> the model's speaker

Without `voices`, every OpenAI voice name speaks with the model's first speaker; the model's
own speaker names are voices too. Text is cut into sentences by pysbd, the splitter Coqui's
Synthesizer uses, and each sentence is one chunk of audio.

`speed` scales the model's durations where it has them: VITS, Glow-TTS, FastPitch, FastSpeech,
SpeedySpeech, AlignTTS and DelightfulTTS read a `length_scale` (1 / speed here), and XTTS takes
`speed` itself. Tacotron, Tacotron 2, Overflow and NeuralHMM decode frame by frame with no
duration to scale: they speak at their own pace and `speed` is ignored. Models that output
spectrograms (Tacotron 2, Glow-TTS, FastPitch, ...) are vocoded with Griffin-Lim; a separate
vocoder model is not wired in. The tests run VITS; the other models go through the same Coqui
calls (setup_model, load_checkpoint, synthesize) but are not exercised here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import EngineUnavailable
from common.registry import ModelConfig
from layers import EngineOptions
from layers.speech import OPENAI_VOICES

# Checkpoint-shaped files that are not the model: speaker tables, XTTS's speaker latents, DVAE
# and mel statistics, a speaker encoder.
AUX_CHECKPOINTS = frozenset(
    {
        "speakers.pth", "speaker_ids.pth", "speakers_xtts.pth", "dvae.pth", "mel_stats.pth",
        "model_se.pth", "model_se.pth.tar",
    }
)  # fmt: skip
# The names Coqui gives a model file, best first, when a directory holds several checkpoints.
CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "best_model.pth", "checkpoint.pth")
# Config fields naming files beside the checkpoint, with the names Coqui gives those files: the
# names of TTS.utils.manage.ModelManager, which rewrites these paths in config.json after its own
# downloads. A directory from the store keeps the paths of the machine it was saved on.
AUX_FILES: dict[str, tuple[str, ...]] = {
    "speakers_file": ("speaker_ids.json", "speaker_ids.pth"),
    "d_vector_file": ("speakers.json", "speakers.pth"),
    "language_ids_file": ("language_ids.json",),
    "speaker_encoder_model_path": ("model_se.pth", "model_se.pth.tar"),
    "speaker_encoder_config_path": ("config_se.json",),
}
AUDIO_FILES: dict[str, tuple[str, ...]] = {"stats_path": ("scale_stats.npy",)}


def load(config: ModelConfig, path: Path, options: EngineOptions) -> CoquiSpeechModel:
    config_file, checkpoint = model_files(config, path)
    return CoquiSpeechModel(config, config_file, checkpoint, options)


def model_files(config: ModelConfig, path: Path) -> tuple[Path, Path]:
    """(config.json, checkpoint) of a model directory, or of the checkpoint file it names."""
    if path.is_file():
        directory, checkpoint = path.parent, path
    else:
        directory, checkpoint = path, None
    config_name = str(config.parameters.get("config", "config.json"))
    config_file = directory / config_name
    if not config_file.is_file() and checkpoint is None:
        # An S3 prefix or an unpacked archive may hold the model one folder down.
        found = sorted(directory.rglob(config_name))
        if len(found) == 1:
            directory, config_file = found[0].parent, found[0]
    if not config_file.is_file():
        raise EngineUnavailable(
            f"The model '{config.name}' has no {config_name} in its directory: a Coqui model is "
            "a directory with config.json and a checkpoint (.pth)."
        )
    return config_file, checkpoint or checkpoint_file(config, directory)


def checkpoint_file(config: ModelConfig, directory: Path) -> Path:
    named = config.parameters.get("checkpoint")
    if named is not None:
        checkpoint = directory / str(named)
        if not checkpoint.is_file():
            raise EngineUnavailable(
                f"The model '{config.name}' names the checkpoint {named}, which is not in its "
                "directory."
            )
        return checkpoint
    candidates = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name.endswith((".pth", ".pth.tar")) and p.name not in AUX_CHECKPOINTS
    )
    if len(candidates) == 1:
        return candidates[0]
    for name in CHECKPOINT_NAMES:
        if directory / name in candidates:
            return directory / name
    if not candidates:
        raise EngineUnavailable(
            f"The model '{config.name}' has no checkpoint (.pth) beside its config.json."
        )
    raise EngineUnavailable(
        f"The model '{config.name}' has {len(candidates)} checkpoints "
        f"({', '.join(p.name for p in candidates)}); name one with parameters: {{checkpoint: ...}}."
    )


def localize_paths(settings: MutableMapping[str, Any], directory: Path) -> None:
    """Points the config's file fields (top level, model_args, audio) at the files in `directory`
    when the paths they hold do not exist here."""
    sections = [(settings, AUX_FILES)]
    for name, fields in (("model_args", AUX_FILES), ("audio", AUDIO_FILES)):
        section = settings[name] if name in settings else None
        if section is not None:
            sections.append((section, fields))
    for section, fields in sections:
        for field, default_names in fields.items():
            value = section[field] if field in section else None
            listed = isinstance(value, list)
            current = str((value[0] if value else "") if listed else (value or ""))
            if not current:
                continue
            path = Path(current)
            # A relative path is relative to the model, not to the server's working directory.
            candidates = [path if path.is_absolute() else directory / path]
            candidates += [directory / n for n in (path.name, *default_names)]
            found = next((c for c in candidates if c.is_file()), None)
            if found is not None and found != path:
                section[field] = [str(found)] if listed else str(found)


def voice_map(
    parameters: Mapping[str, Any], speakers: list[str], model_name: str
) -> dict[str, str | None]:
    """Request voice name -> the model's speaker (None: a single-speaker model)."""
    own: dict[str, str | None] = {s: s for s in speakers}
    configured = parameters.get("voices")
    if not isinstance(configured, Mapping):
        first = speakers[0] if speakers else None
        return {name: first for name in OPENAI_VOICES} | own
    mapped = {str(name): str(speaker) for name, speaker in configured.items()}
    unknown = sorted(s for s in mapped.values() if s not in own)
    if unknown:
        raise EngineUnavailable(
            f"The model '{model_name}' maps voices to speakers it does not have: "
            f"{', '.join(unknown)}; its speakers are: {', '.join(speakers) or '(one, unnamed)'}."
        )
    return mapped | own


def choose_language(parameters: Mapping[str, Any], languages: list[str], model_name: str) -> str:
    configured = parameters.get("language")
    if configured is None:
        return "en" if "en" in languages or not languages else languages[0]
    if languages and configured not in languages:
        raise EngineUnavailable(
            f"The model '{model_name}' does not speak '{configured}'; its languages are: "
            f"{', '.join(languages)}."
        )
    return str(configured)


def to_int16(wav: Any) -> np.ndarray:
    samples = np.asarray(wav, dtype=np.float32).reshape(-1)
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


class CoquiSpeechModel:
    def __init__(
        self, config: ModelConfig, config_file: Path, checkpoint: Path, options: EngineOptions
    ) -> None:
        import pysbd
        import torch
        from TTS.config import load_config
        from TTS.tts.models import setup_model
        from TTS.tts.utils.languages import normalize_language
        from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES

        torch.set_num_threads(options.threads)
        parameters = config.parameters
        settings = load_config(str(config_file))
        localize_paths(settings, config_file.parent)
        self._model = setup_model(config=settings)
        self._model.load_checkpoint(settings, checkpoint_path=str(checkpoint), eval=True)
        device = parameters.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model.to(device)
        self._torch = torch

        self.name = config.name
        audio = settings.audio
        self.sample_rate = int(audio.get("output_sample_rate") or audio["sample_rate"])
        manager = getattr(self._model, "speaker_manager", None)
        speakers = list(manager.speaker_names) if manager is not None else []
        self._voices = voice_map(parameters, speakers, config.name)
        language_manager = getattr(self._model, "language_manager", None)
        languages = list(language_manager.language_names) if language_manager is not None else []
        self._language = choose_language(parameters, languages, config.name)
        # Only a multilingual model takes a language; the others fail on one they were not given.
        self._language_arg = self._language if len(languages) > 1 else None
        segmenter_language = normalize_language(self._language) or "en"
        if segmenter_language not in pysbd.languages.LANGUAGE_CODES:
            segmenter_language = "en"
        self._segmenter = pysbd.Segmenter(language=segmenter_language, clean=True)
        self._pause = np.zeros(PAD_SILENCE_SAMPLES, dtype=np.int16)  # Coqui's between sentences
        self._length_scale = getattr(self._model, "length_scale", None)
        self._takes_speed = settings.model == "xtts"
        self._trim = bool(audio.get("do_trim_silence")) and hasattr(self._model, "ap")
        # The lock guards each model call and the length_scale it reads; it is not held between
        # sentences, so a stream its client left cannot keep the model from other requests.
        self._lock = threading.Lock()

    def voices(self) -> list[str]:
        return sorted(self._voices)

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[np.ndarray]:
        speaker = self._voices[voice]
        sentences = [s.strip() for s in self._segmenter.segment(text)]
        sentences = [s for s in sentences if s]
        if not sentences and text.strip():
            # pysbd's cleaning can leave nothing of a text that is only punctuation or symbols.
            sentences = [text.strip()]
        for index, sentence in enumerate(sentences):
            samples = to_int16(self._speak(sentence, speaker, speed))
            if index < len(sentences) - 1:
                samples = np.concatenate([samples, self._pause])
            yield samples

    def _speak(self, sentence: str, speaker: str | None, speed: float) -> np.ndarray:
        extra: dict[str, Any] = {"speed": speed} if self._takes_speed else {}
        with self._lock, self._torch.inference_mode():
            if self._length_scale is not None:
                # A length scale stretches durations: the inverse of speed.
                self._model.length_scale = self._length_scale / speed
            try:
                outputs = self._model.synthesize(
                    text=sentence,
                    speaker=speaker,
                    language=self._language_arg,
                    use_griffin_lim=True,  # used only by models that output spectrograms
                    **extra,
                )
            finally:
                if self._length_scale is not None:
                    self._model.length_scale = self._length_scale
        wav = outputs["wav"]
        if isinstance(wav, self._torch.Tensor):
            wav = wav.detach().cpu().numpy()
        wav = np.asarray(wav, dtype=np.float32).squeeze()
        if self._trim:
            wav = wav[: self._model.ap.find_endpoint(wav)]
        return wav
