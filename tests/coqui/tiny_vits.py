"""A tiny VITS with random weights, saved as a Coqui model directory (config.json + model.pth).

    python -m tests.coqui.tiny_vits OUT_DIR [SPEAKER ...]

Small enough to load and speak in well under a second on two CPU cores; what it says is noise,
but noise of the shape a trained model gives: one array per sentence, a length that follows the
text and the speed, a voice that depends on the speaker.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

FRAMES_PER_TOKEN = 4  # ~46 ms a character (blanks between them) at 22.05 kHz, hop 256


def build(directory: Path, speakers: Sequence[str] = (), sample_rate: int = 22_050) -> Path:
    import torch
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs
    from TTS.tts.utils.speakers import SpeakerManager

    torch.manual_seed(len(speakers))
    args = VitsArgs(
        hidden_channels=16,
        hidden_channels_ffn_text_encoder=32,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        resblock_type_decoder="2",
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3]],
        upsample_initial_channel_decoder=16,
        use_sdp=False,  # the deterministic duration predictor: lengths do not vary per run
        init_discriminator=False,  # training only
        inference_noise_scale=0.0,  # the same text and speaker give the same audio
        speaker_embedding_channels=8,
    )
    config = VitsConfig(model_args=args, use_phonemes=False, text_cleaner="basic_cleaners")
    config.audio.sample_rate = sample_rate
    # Coqui's endpoint finder takes any 0.8 s without a positive peak for the end of speech, and
    # random weights make such stretches: lengths would depend on the seed.
    config.audio.do_trim_silence = False
    with tempfile.TemporaryDirectory() as training:
        # Saved the way Coqui's trainer saves one: the config names the speaker file by its path
        # on the training machine, which does not exist where the model is served.
        if speakers:
            manager = SpeakerManager()
            manager.name_to_id = {name: i for i, name in enumerate(speakers)}
            speakers_file = Path(training) / "speakers.pth"
            manager.save_ids_to_file(str(speakers_file))
            args.use_speaker_embedding = config.use_speaker_embedding = True
            args.speakers_file = config.speakers_file = str(speakers_file)
        model = Vits(config)
        with torch.no_grad():
            # Untrained, the duration predictor says ~1 frame a token, and the ceil() in VITS's
            # inference would hide speed=2; a trained one says several.
            model.duration_predictor.proj.weight.zero_()
            model.duration_predictor.proj.bias.fill_(math.log(FRAMES_PER_TOKEN))
            # Untrained, the waveform is ~0.004 full scale: louder, so the audio is not silence.
            model.waveform_decoder.conv_post.weight.mul_(30)
        directory.mkdir(parents=True, exist_ok=True)
        config.save_json(str(directory / "config.json"))
        torch.save({"model": model.state_dict()}, directory / "model.pth")
        if speakers:
            shutil.copy(speakers_file, directory / "speakers.pth")
    return directory


if __name__ == "__main__":
    build(Path(sys.argv[1]), sys.argv[2:])
