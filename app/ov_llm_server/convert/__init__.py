"""``ov-convert-model``: Hugging Face or GGUF models in, registered OpenVINO IR folders out."""
