"""The application carried over the link: the inference messages (docs/protocol.md)
and the offline Qwen-3 tokenizer."""
