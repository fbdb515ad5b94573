"""Generation, split along the process boundary.

* ``core/``: runs inside an engine process, one per loaded model: the pipeline, its step
  loop, detokenization and stop sequences. The only code that steps a GenAI pipeline.
* ``messages``: what crosses the boundary (both sides).
* ``client``, ``supervisor``, ``tokenizer``: run in the HTTP process: one engine process
  as seen from outside, keeping it alive, and rendering and encoding prompts.
"""
