"""`charrnn serve`: the models named at start, over HTTP on this machine, and a page to play with them.

    models.py       the models served: loaded once, at start, known by name only, each with
                    its generation engine (sample/batch.py); info's fields
    api.py          charrnn's requests, no HTTP: checked through SampleConfig.validate; beam
                    search, the loss of a text, the cell-activation view
    openai_api.py   POST /v1/completions in the OpenAI API's shape
    server.py       the HTTP side: Starlette on uvicorn; requests to the engine and back
    guard.py        Host, Origin, API key, content type and the bounds of a request
    page.html       the page at /: inline HTML, CSS and JavaScript, nothing fetched from elsewhere

It may import the sample, insight, store and model parts; nothing imports it but the CLI.
"""
