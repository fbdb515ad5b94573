"""Everything in this package runs inside an engine process, never in the HTTP process.

``main``: the process and its loop; ``runner``: what the loop asks of a model, whose kind
picks one of ``llm`` (the generative pipeline and its requests), ``embed`` (embeddings,
batched dynamically) and ``rerank``, over ``encoders`` (the embedding and rerank
pipelines); ``tokens``: ``/tokenize`` and ``/detokenize``; ``pipelines``: building
pipelines; ``sampling``: API sampling fields to GenAI's; ``text``: detokenization, stop
sequences, per-token texts; ``faults``: fault injection for tests.
"""
