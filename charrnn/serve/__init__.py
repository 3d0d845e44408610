"""`charrnn serve`: the models named at start, over HTTP on this machine, and a page to play with them.

    models.py  the models served: loaded once, at start, known by name only; info's fields
    api.py     requests to results, no HTTP: a JSON request checked through
               SampleConfig.validate, sampling with length and time bounds, the loss of a
               text (insight.scores.score_text), the cell-activation view (insight.neurons.activations,
               rank_units; neurons_view's colours)
    server.py  the HTTP side: the standard library's ThreadingHTTPServer, one thread per
               request, streamed answers as newline-delimited JSON in chunks
    page.html  the page at /: inline HTML, CSS and JavaScript, nothing fetched from elsewhere

It may import the sample, insight, store and model parts; nothing imports it but the CLI.
"""
