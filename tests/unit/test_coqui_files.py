"""The Coqui layer's pure parts: finding a model's files, its config's paths, voices, language.
They run without the TTS package (which only `make test-coqui` installs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import EngineUnavailable
from common.registry import ModelConfig
from layers import EngineOptions, make_loader
from layers.coqui_tts import (
    choose_language,
    localize_paths,
    model_files,
    voice_map,
)
from layers.speech import OPENAI_VOICES


def entry(**parameters) -> ModelConfig:
    return ModelConfig(
        name="vits", backend="coqui-tts", source="/models/vits", parameters=parameters
    )


def model_dir(root: Path, *names: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"x")
    return root


def test_a_directory_with_config_and_checkpoint(tmp_path):
    d = model_dir(tmp_path, "config.json", "model_file.pth", "speakers.pth", "speaker_ids.json")
    assert model_files(entry(), d) == (d / "config.json", d / "model_file.pth")


def test_a_model_one_folder_down(tmp_path):
    d = model_dir(tmp_path / "vits-vctk", "config.json", "best_model.pth")
    assert model_files(entry(), tmp_path) == (d / "config.json", d / "best_model.pth")


def test_a_checkpoint_file_as_the_source(tmp_path):
    d = model_dir(tmp_path, "config.json", "checkpoint_1000.pth", "checkpoint_2000.pth")
    assert model_files(entry(), d / "checkpoint_1000.pth")[1] == d / "checkpoint_1000.pth"


def test_coquis_own_name_wins_among_several(tmp_path):
    d = model_dir(tmp_path, "config.json", "checkpoint_5000.pth", "best_model.pth")
    assert model_files(entry(), d)[1] == d / "best_model.pth"


def test_named_files(tmp_path):
    d = model_dir(tmp_path, "vits.json", "checkpoint_1000.pth", "checkpoint_2000.pth")
    config, checkpoint = model_files(entry(config="vits.json", checkpoint="checkpoint_2000.pth"), d)
    assert (config, checkpoint) == (d / "vits.json", d / "checkpoint_2000.pth")


@pytest.mark.parametrize(
    ("names", "parameters", "says"),
    [
        ((), {}, "config.json"),
        (("model.pth",), {}, "config.json"),
        (("config.json",), {}, "no checkpoint"),
        (("config.json", "speakers.pth", "dvae.pth"), {}, "no checkpoint"),
        (("config.json", "a.pth", "b.pth"), {}, "a.pth, b.pth"),
        (("config.json", "a.pth"), {"checkpoint": "c.pth"}, "c.pth"),
    ],
)
def test_a_directory_that_is_not_a_model_says_why(tmp_path, names, parameters, says):
    d = model_dir(tmp_path / "m", *names)
    with pytest.raises(EngineUnavailable) as caught:
        model_files(entry(**parameters), d)
    assert says in caught.value.message and "'vits'" in caught.value.message


def test_the_loader_says_why_without_importing_tts(tmp_path):
    load = make_loader(EngineOptions(threads=1))
    with pytest.raises(EngineUnavailable, match="config.json"):
        load(entry(), model_dir(tmp_path / "empty"))


def test_config_paths_from_the_training_machine_point_into_the_model(tmp_path):
    d = model_dir(tmp_path, "speakers.pth", "language_ids.json", "scale_stats.npy", "d.json")
    (tmp_path / "elsewhere").mkdir()
    settings = {
        "speakers_file": "/home/trainer/run-7/speakers.pth",
        "d_vector_file": ["/home/trainer/d.json"],
        "language_ids_file": None,
        "model_args": {"speakers_file": "/home/trainer/run-7/speakers.pth"},
        "audio": {"stats_path": "/data/stats/scale_stats.npy"},
    }
    localize_paths(settings, d)
    assert settings["speakers_file"] == str(d / "speakers.pth")
    assert settings["model_args"]["speakers_file"] == str(d / "speakers.pth")
    assert settings["d_vector_file"] == [str(d / "d.json")]
    assert settings["language_ids_file"] is None
    assert settings["audio"]["stats_path"] == str(d / "scale_stats.npy")


def test_config_paths_coquis_default_names_relative_and_existing(tmp_path):
    d = model_dir(tmp_path / "m", "speaker_ids.json", "config_se.json")
    kept = model_dir(tmp_path / "kept", "model_se.pth")
    settings = {
        "speakers_file": "/gone/ids.json",  # not here by its name: Coqui's default name is
        "speaker_encoder_config_path": "config_se.json",  # relative to the model
        "speaker_encoder_model_path": str(kept / "model_se.pth"),  # exists: kept
        "language_ids_file": "/gone/language_ids.json",  # nowhere: left for Coqui to report
    }
    localize_paths(settings, d)
    assert settings == {
        "speakers_file": str(d / "speaker_ids.json"),
        "speaker_encoder_config_path": str(d / "config_se.json"),
        "speaker_encoder_model_path": str(kept / "model_se.pth"),
        "language_ids_file": "/gone/language_ids.json",
    }


def test_voices_of_a_single_speaker_model():
    assert voice_map({}, [], "m") == {name: None for name in OPENAI_VOICES}


def test_voices_of_a_multi_speaker_model_default_to_its_first_speaker():
    voices = voice_map({}, ["p225", "p226"], "m")
    assert voices["alloy"] == voices["nova"] == "p225" and voices["p226"] == "p226"


def test_mapped_voices_and_the_models_own_names():
    voices = voice_map({"voices": {"alloy": "p226", "echo": "p225"}}, ["p225", "p226"], "m")
    assert voices == {"alloy": "p226", "echo": "p225", "p225": "p225", "p226": "p226"}


def test_a_voice_mapped_to_a_missing_speaker_is_named():
    with pytest.raises(EngineUnavailable, match="p999.*p225, p226"):
        voice_map({"voices": {"alloy": "p999"}}, ["p225", "p226"], "m")


def test_language():
    assert choose_language({}, ["de", "en", "fr"], "m") == "en"
    assert choose_language({}, ["de", "fr"], "m") == "de"
    assert choose_language({}, [], "m") == "en"
    assert choose_language({"language": "fr"}, ["de", "fr"], "m") == "fr"
    with pytest.raises(EngineUnavailable, match="'es'"):
        choose_language({"language": "es"}, ["de", "fr"], "m")
