"""Stand-ins for tests, demos and benchmarks, NOT real services or models: a loopback fake of each hosted
service (openai_server.py, gemini_server.py, firefly_server.py; a banner says so at start; hosted_standins.py
points a policy's Gemini and Firefly backends at them), the
`kind: function` backend whose work is a plain function (function.py), and tiny random-weight pipelines built
offline with `save_pretrained` (tiny_sdxl, tiny_clip, tiny_clipseg, tiny_grounded_sam, tiny_qwen_edit,
tiny_flux2_klein; their outputs are noise), and the settings that point a policy's backends at them
(instruct_standins).

Names load on first use, so `python -m backends.standins.openai_server` imports its module once and nothing
here imports torch until a tiny model is built."""

from backends.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "firefly_server": ("FakeFireflyServer",),
        "function": ("FunctionBackend", "solid_images"),
        "gemini_server": ("FakeGeminiServer",),
        "hosted_standins": ("HOSTED_STANDIN_KINDS", "HostedStandins", "hosted_standin_settings"),
        "instruct_standins": ("INSTRUCT_KINDS", "instruct_standin_settings"),
        "openai_server": ("FakeOpenAIServer",),
        "tiny_clip": ("STANDIN_VERSION", "build_tiny_clip"),
        "tiny_clipseg": ("build_tiny_clipseg",),
        "tiny_grounded_sam": ("build_tiny_grounded_sam", "detector_dir", "segmenter_dir"),
        "tiny_sdxl": ("build_tiny_ip_adapter", "build_tiny_lora", "build_tiny_sdxl"),
    },
)
