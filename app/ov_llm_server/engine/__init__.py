"""Generation, split along the process boundary.

* ``core/``: runs inside an engine process, one per loaded model: the pipeline of the
  model's kind (generation, embeddings, rerank), its loop, tokenization, detokenization and
  stop sequences. The only code that touches openvino_genai while serving.
* ``messages``: what crosses the boundary (both sides).
* ``client``, ``supervisor``: run in the HTTP process: one engine process as seen from
  outside, and keeping it alive.
"""
