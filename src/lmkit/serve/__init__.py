"""``lmkit serve``: a checkpoint behind OpenAI's completions API, with dynamic batching
(:mod:`lmkit.serve.batcher`), UTF-8- and stop-string-safe streaming (:mod:`lmkit.serve.stream`),
requests as the engine's jobs and its events as their choices (:mod:`lmkit.serve.jobs`), the web app
(:mod:`lmkit.serve.app`) and the playground page (``static/index.html``)."""
