"""ov-llm-server: an OpenAI-compatible chat backend for small OpenVINO models."""

from importlib.metadata import PackageNotFoundError, version


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


__version__ = _version("ov-llm-server")
OPENVINO_GENAI_VERSION = _version("openvino-genai")
