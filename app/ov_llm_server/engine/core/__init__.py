"""Everything in this package runs inside an engine process, never in the HTTP process.

``main``: the process and its loop; ``llm``: the generative pipeline and its requests;
``pipelines``: building pipelines; ``sampling``: API sampling fields to GenAI's;
``text``: detokenization and stop sequences; ``faults``: fault injection for tests.
"""
