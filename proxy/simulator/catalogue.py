"""The built-in models and the payloads describing them.

Model names, the four built-in models, and the bodies of ``/api/tags`` entries,
``/api/show``, ``/api/ps`` entries and ``/api/pull`` progress lines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .wire import RawJSON, go_float, go_time

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
_PART = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}"
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,349}")
_PART_RE = re.compile(_PART)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}")


@dataclass(frozen=True)
class ModelName:
    """A parsed ``[host/][namespace/]model[:tag]`` reference."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName | None:
        """Parse with Ollama's defaults; None when the name is invalid."""
        name = text.split("@", 1)[0]
        tag = "latest"
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        parts = name.split("/")
        if len(parts) > 3 or not parts[-1]:
            return None
        host = parts[-3] if len(parts) == 3 else DEFAULT_HOST
        namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
        model = parts[-1]
        valid = (
            _HOST_RE.fullmatch(host)
            and _PART_RE.fullmatch(namespace)
            and _PART_RE.fullmatch(model)
            and _TAG_RE.fullmatch(tag)
        )
        return cls(host, namespace, model, tag) if valid else None

    @property
    def key(self) -> str:
        """Case-insensitive identity used for lookups."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """Ollama's DisplayShortest: ``llama3.2:latest``, ``user/model:tag``."""
        prefix = ""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


@dataclass(frozen=True)
class ModelSpec:
    """A simulated installed model."""

    name: str
    family: str
    families: tuple[str, ...]
    parameter_size: str
    quantization_level: str
    size: int
    digest: str
    layer_digest: str
    capabilities: tuple[str, ...]
    context_length: int
    embedding_length: int
    modified_ns: int
    parameter_count: int
    template: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    license: str = ""
    architecture: str = ""

    @property
    def ref(self) -> ModelName:
        parsed = ModelName.parse(self.name)
        assert parsed is not None
        return parsed

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


_LLAMA_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n{{ if .System }}{{ .System }}{{ end }}"
    "<|eot_id|>{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_QWEN_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
)
_LLAVA_TEMPLATE = "[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]"

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="llama3.2:latest",
        family="llama",
        families=("llama",),
        parameter_size="3.2B",
        quantization_level="Q4_K_M",
        size=2019393189,
        digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        layer_digest="dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff",
        capabilities=("completion", "tools"),
        context_length=131072,
        embedding_length=3072,
        modified_ns=1_746_405_464_706_015_396,
        parameter_count=3212749888,
        template=_LLAMA_TEMPLATE,
        parameters=(
            ("stop", '"<|start_header_id|>"'),
            ("stop", '"<|end_header_id|>"'),
            ("stop", '"<|eot_id|>"'),
        ),
        license=(
            "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\n"
            "Llama 3.2 Version Release Date: September 25, 2024"
        ),
        architecture="llama",
    ),
    ModelSpec(
        name="qwen3:latest",
        family="qwen3",
        families=("qwen3",),
        parameter_size="8.2B",
        quantization_level="Q4_K_M",
        size=5225388164,
        digest="500a1f067a9f782620b40bee6f7b0c89e17ae61f686b92c24933e4ca4b2b8b41",
        layer_digest="a3de86cd1c132c822487ededd47a324c50491393e6565cd14bafa40d0b8e686f",
        capabilities=("completion", "tools", "thinking"),
        context_length=40960,
        embedding_length=4096,
        modified_ns=1_746_832_008_639_712_648,
        parameter_count=8190735360,
        template=_QWEN_TEMPLATE,
        parameters=(
            ("repeat_penalty", "1"),
            ("stop", '"<|im_start|>"'),
            ("stop", '"<|im_end|>"'),
            ("temperature", "0.6"),
            ("top_k", "20"),
            ("top_p", "0.95"),
        ),
        license="Apache License\nVersion 2.0, January 2004",
        architecture="qwen3",
    ),
    ModelSpec(
        name="llava:latest",
        family="llama",
        families=("llama", "clip"),
        parameter_size="7B",
        quantization_level="Q4_0",
        size=4733363377,
        digest="8dd30f6b0cb19f555f2c7a7ebda861449ea2cc76bf1f44e262931f45fc81d081",
        layer_digest="170370233dd5c5415250a2ecd5c71586352850729062ccef1496385647293868",
        capabilities=("completion", "vision"),
        context_length=32768,
        embedding_length=4096,
        modified_ns=1_743_700_000_123_456_789,
        parameter_count=7241732096,
        template=_LLAVA_TEMPLATE,
        parameters=(("stop", '"[INST]"'), ("stop", '"[/INST]"')),
        license="Apache License\nVersion 2.0, January 2004",
        architecture="llama",
    ),
    ModelSpec(
        name="all-minilm:latest",
        family="bert",
        families=("bert",),
        parameter_size="23M",
        quantization_level="F16",
        size=45960996,
        digest="1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef",
        layer_digest="797b70c4edf85907fe0a49eb85811256f65fa0f7bf52166b147fd16be2be4662",
        capabilities=("embedding",),
        context_length=512,
        embedding_length=384,
        modified_ns=1_741_000_000_500_000_000,
        parameter_count=22565376,
        license="Apache License\nVersion 2.0, January 2004",
        architecture="bert",
    ),
)
BUILTIN_BY_KEY = {spec.ref.key: spec for spec in BUILTIN_MODELS}


def _details(spec: ModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": list(spec.families),
        "parameter_size": spec.parameter_size,
        "quantization_level": spec.quantization_level,
    }


def _model_info(spec: ModelSpec, verbose: bool) -> dict[str, Any]:
    arch = spec.architecture
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.file_type": 15 if spec.quantization_level == "Q4_K_M" else 2,
        "general.parameter_count": spec.parameter_count,
        "general.quantization_version": 2,
        f"{arch}.attention.head_count": 32,
        f"{arch}.attention.head_count_kv": 8,
        f"{arch}.attention.layer_norm_rms_epsilon": RawJSON(go_float(1e-05, 32)),
        f"{arch}.block_count": 28,
        f"{arch}.context_length": spec.context_length,
        f"{arch}.embedding_length": spec.embedding_length,
        f"{arch}.rope.freq_base": RawJSON(go_float(500000.0, 32)),
        "tokenizer.ggml.bos_token_id": 128000,
        "tokenizer.ggml.eos_token_id": 128009,
        "tokenizer.ggml.model": "gpt2",
        # Without verbose Ollama nulls the huge token arrays instead of dropping them.
        "tokenizer.ggml.merges": ["Ġ t", "Ġ a", "i n"] if verbose else None,
        "tokenizer.ggml.token_type": [1, 1, 1] if verbose else None,
        "tokenizer.ggml.tokens": ["!", '"', "#"] if verbose else None,
    }
    # Go marshals map[string]any with sorted keys.
    return dict(sorted(info.items()))


def _tensors(spec: ModelSpec) -> list[dict[str, Any]]:
    return [
        {"name": "token_embd.weight", "type": "Q6_K", "shape": [spec.embedding_length, 128256]},
        {"name": "blk.0.attn_norm.weight", "type": "F32", "shape": [spec.embedding_length]},
        {"name": "output_norm.weight", "type": "F32", "shape": [spec.embedding_length]},
    ]


def _modelfile(spec: ModelSpec) -> str:
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {spec.ref.short}",
        "",
        f"FROM /root/.ollama/models/blobs/sha256-{spec.layer_digest}",
    ]
    if spec.template:
        lines.append(f'TEMPLATE """{spec.template}"""')
    for key, value in spec.parameters:
        lines.append(f"PARAMETER {key} {value.strip(chr(34))}")
    if spec.license:
        lines.append(f'LICENSE """{spec.license}"""')
    return "\n".join(lines) + "\n"


def _parameters_text(spec: ModelSpec) -> str:
    return "\n".join(f"{key:<30} {value}" for key, value in spec.parameters)


def tags_entry(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.ref.short,
        "model": spec.ref.short,
        "modified_at": go_time(spec.modified_ns, local=True),
        "size": spec.size,
        "digest": spec.digest,
        "details": _details(spec),
        "capabilities": list(spec.capabilities),
    }


def ps_entry(spec: ModelSpec, expires: float) -> dict[str, Any]:
    """One ``/api/ps`` entry for a model kept loaded until ``expires`` (epoch seconds)."""
    return {
        "name": spec.ref.short,
        "model": spec.ref.short,
        "size": spec.size,
        "digest": spec.digest,
        "details": _details(spec),
        "expires_at": go_time(int(expires * 1e9), local=True),
        "size_vram": spec.size,
        "context_length": 4096 if spec.context_length > 4096 else spec.context_length,
    }


def show_payload(spec: ModelSpec, verbose: bool) -> dict[str, Any]:
    """The ``/api/show`` body (ShowResponse field order; ``model_info`` always)."""
    body: dict[str, Any] = {}
    if spec.license:
        body["license"] = spec.license
    body["modelfile"] = _modelfile(spec)
    if spec.parameters:
        body["parameters"] = _parameters_text(spec)
    if spec.template:
        body["template"] = spec.template
    body["details"] = _details(spec)
    body["model_info"] = _model_info(spec, verbose)
    if spec.has("vision"):
        body["projector_info"] = {
            "clip.has_vision_encoder": True,
            "clip.vision.embedding_length": 1024,
            "clip.vision.image_size": 336,
            "clip.vision.patch_size": 14,
        }
    if verbose:
        body["tensors"] = _tensors(spec)
    body["capabilities"] = list(spec.capabilities)
    body["modified_at"] = go_time(spec.modified_ns, local=True)
    return body


def pull_lines(spec: ModelSpec) -> list[dict[str, Any]]:
    layers = [
        (spec.layer_digest, spec.size - 12_000, True),
        (hashlib.sha256(spec.template.encode()).hexdigest(), max(len(spec.template), 96), False),
        (hashlib.sha256(spec.license.encode()).hexdigest(), max(len(spec.license), 120), False),
        (hashlib.sha256(spec.name.encode()).hexdigest(), 412, False),
    ]
    lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
    for digest, total, big in layers:
        steps = (0, total // 2, total) if big else (total,)
        for completed in steps:
            line: dict[str, Any] = {
                "status": f"pulling {digest[:12]}",
                "digest": f"sha256:{digest}",
                "total": total,
            }
            if completed:
                line["completed"] = completed
            lines.append(line)
    lines += [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    return lines
