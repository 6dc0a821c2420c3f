"""Tiny random diffusers pipelines of every supported family, built offline from small configs.

The way diffusers' own tests build them (tests/pipelines/wan/test_wan.py and its siblings),
except that nothing comes from the hub: tokenizers are WordLevel vocabularies made here and
text/image encoders are random. For tests, benchmarks, and smoke-testing a GPU install
without downloading weights: `save_tiny_pipeline("wan", "/tmp/tiny-wan")`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

# Words the tiny tokenizers know; anything else becomes <unk>. Prompts only need to tokenize.
_WORDS = ("a the red green blue circle square triangle moving left right up down on black white background "
          "cat dog runs jumps slowly fast video of in with and").split()

# Sizes the tiny pipelines generate (width, height) and a frame count each accepts.
TINY_SIZES = {"wan": (16, 16), "wan-i2v": (16, 16), "cogvideox": (16, 16), "ltx": (32, 32),
              "hunyuan-video": (16, 16), "svd": (64, 64)}
TINY_FRAMES = {"wan": 9, "wan-i2v": 9, "cogvideox": 9, "ltx": 9, "hunyuan-video": 9, "svd": 4}
# Registry `call_options` the tiny pipelines need: short text sequences (their tiny text encoders), and for
# HunyuanVideo a plain template, since the default one crops 95 Llama-chat tokens a WordLevel vocabulary lacks.
TINY_CALL_OPTIONS = {"wan": {"max_sequence_length": 16}, "wan-i2v": {"max_sequence_length": 16},
                     "cogvideox": {"max_sequence_length": 16}, "ltx": {"max_sequence_length": 16},
                     "hunyuan-video": {"max_sequence_length": 16,
                                       "prompt_template": {"template": "{}", "crop_start": 0}},
                     "svd": {}}


def word_level_tokenizer(special: dict[str, str], eos: str | None = None, bos: str | None = None,
                         model_max_length: int = 77):
    """A PreTrainedTokenizerFast over a WordLevel vocabulary: special tokens first, then _WORDS.

    `special` maps tokenizer roles (pad_token, unk_token, ...) to token strings. With transformers 5,
    T5TokenizerFast refuses a non-Unigram vocabulary, so the generic fast tokenizer stands in for it.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(special.values()))
    vocab = {tok: i for i, tok in enumerate(specials + list(_WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = " ".join(t for t in (bos, "$A", eos) if t)
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[
        (t, vocab[t]) for t in (bos, eos) if t])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **special)


def _t5(umt5: bool = False):
    """A 2-layer T5 encoder of width 32 (UMT5, as Wan ships, when umt5) and its tokenizer."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    tokenizer = word_level_tokenizer({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}, eos="</s>",
                                     model_max_length=512)
    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(0)
    encoder = model_cls(config_cls(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
    return encoder, tokenizer


def _clip_vision(hidden: int, image_size: int, patch_size: int, layers: int = 2, projection: bool = True):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    encoder = (CLIPVisionModelWithProjection if projection else CLIPVisionModel)(CLIPVisionConfig(
        hidden_size=hidden, projection_dim=hidden, num_hidden_layers=layers, num_attention_heads=2,
        image_size=image_size, intermediate_size=16, patch_size=patch_size))
    return encoder, CLIPImageProcessor(crop_size=image_size, size=image_size)


def _wan_vae():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _wan_transformer(in_channels: int, image_dim: int | None = None, heads: int = 2, head_dim: int = 12,
                     ffn_dim: int = 32, layers: int = 2):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
                                 in_channels=in_channels, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=ffn_dim,
                                 num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                 rope_max_seq_len=32, image_dim=image_dim)


def tiny_wan(**transformer):
    """`transformer` overrides the denoiser's shape (heads, head_dim, ffn_dim, layers): benchmarks use wider ones."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    text_encoder, tokenizer = _t5(umt5=True)
    return WanPipeline(transformer=_wan_transformer(16, **transformer), vae=_wan_vae(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder=text_encoder,
                       tokenizer=tokenizer)


def tiny_wan_i2v():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    text_encoder, tokenizer = _t5(umt5=True)
    image_encoder, image_processor = _clip_vision(hidden=4, image_size=32, patch_size=4, projection=False)
    # 36 input channels: 16 noisy latents + 4 first-frame mask + 16 image latents
    return WanImageToVideoPipeline(transformer=_wan_transformer(36, image_dim=4), vae=_wan_vae(),
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder=text_encoder,
                                   tokenizer=tokenizer, image_encoder=image_encoder, image_processor=image_processor)


def tiny_cogvideox():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8,  # 4 * 8 = 32 = the T5 width; divisible by 16 for 3D RoPE
        in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=32, num_layers=2,
        sample_width=2, sample_height=2, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=16)
    torch.manual_seed(0)
    blocks = 4
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * blocks,
                                 up_block_types=("CogVideoXUpBlock3D",) * blocks, block_out_channels=(8,) * blocks,
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    text_encoder, tokenizer = _t5()
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler())


def tiny_ltx():
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                           LTXVideoTransformer3DModel)

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=2, caption_channels=32)  # First Block Cache needs 2 blocks
    torch.manual_seed(0)
    scaling = (True, True, False, False)  # 4x spatial and 4x temporal compression
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8),
                                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
                                spatio_temporal_scaling=scaling, decoder_spatio_temporal_scaling=scaling,
                                patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    text_encoder, tokenizer = _t5()
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                       tokenizer=tokenizer, transformer=transformer)


def tiny_hunyuan_video():
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True)
    tokenizer = word_level_tokenizer({"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>",
                                      "unk_token": "<unk>"}, bos="<s>", model_max_length=512)
    tokenizer_2 = word_level_tokenizer({"bos_token": "<|startoftext|>", "pad_token": "<|pad|>",
                                        "eos_token": "<|endoftext|>", "unk_token": "<|unk|>"},
                                       bos="<|startoftext|>", eos="<|endoftext|>", model_max_length=77)
    torch.manual_seed(0)
    text_encoder = LlamaModel(LlamaConfig(
        bos_token_id=0, pad_token_id=1, eos_token_id=2, hidden_size=16, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=len(tokenizer), hidden_act="gelu"))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, pad_token_id=1, eos_token_id=2, hidden_size=8, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=len(tokenizer_2), projection_dim=32))
    return HunyuanVideoPipeline(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2,
                                tokenizer_2=tokenizer_2)


def tiny_svd():
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=64, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
        num_attention_heads=8, projection_class_embeddings_input_dim=96, addition_time_embed_dim=32,
        num_frames=TINY_FRAMES["svd"])
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002, steps_offset=1,
        timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)
    torch.manual_seed(0)
    # Four blocks: 8x spatial compression as in the real VAE, so latents stay small (its norms need 32 channels).
    vae = AutoencoderKLTemporalDecoder(block_out_channels=[32] * 4, in_channels=3, out_channels=3,
                                       down_block_types=["DownEncoderBlock2D"] * 4, latent_channels=4)
    # The pipeline resizes the image to 224x224 for CLIP, as the real encoder expects; big patches keep it tiny.
    image_encoder, feature_extractor = _clip_vision(hidden=32, image_size=224, patch_size=32)
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=feature_extractor)


TINY_BUILDERS: dict[str, Callable] = {"wan": tiny_wan, "wan-i2v": tiny_wan_i2v, "cogvideox": tiny_cogvideox,
                                      "ltx": tiny_ltx, "hunyuan-video": tiny_hunyuan_video, "svd": tiny_svd}


def save_tiny_pipeline(family: str, path: str | Path) -> Path:
    """Build the tiny pipeline of `family` and save it in diffusers format (model_index.json + folders)."""
    if family not in TINY_BUILDERS:
        raise ValueError(f"no tiny pipeline for {family!r}; choose one of: {', '.join(TINY_BUILDERS)}")
    path = Path(path)
    TINY_BUILDERS[family]().save_pretrained(path)
    return path


def _toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def tiny_registry_entry(family: str, path: str | Path, model_id: str | None = None, **fields) -> str:
    """A models.toml [[models]] entry serving the tiny pipeline saved at `path`; `fields` add or override keys."""
    width, height = TINY_SIZES[family]
    entry = {"id": model_id or f"tiny-{family}", "backend": "diffusers", "path": str(path), "family": family,
             "fps": 8, "default_steps": 2,
             "limits": {"sizes": [f"{width}x{height}"], "max_frames": 9 if family != "svd" else 8},
             "call_options": TINY_CALL_OPTIONS[family]} | fields
    lines = ["[[models]]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if not isinstance(v, dict)]
    for k, v in entry.items():
        if isinstance(v, dict) and v:
            lines.append(f"[models.{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"
