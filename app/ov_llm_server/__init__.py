"""ov-llm-server: an OpenAI-compatible chat backend for small OpenVINO models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ov-llm-server")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
