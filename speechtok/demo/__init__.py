"""Browser demo: codec comparison, TTS/enhancement front-ends and listening tests (MUSHRA, A/B).

`listening` holds everything that does not need Gradio (test definitions, stimuli, the SQLite
rating store, statistics), so it can be used and tested without the web stack; `app` builds
the Gradio interface and backs `speechtok demo` and `python demo/app.py`.
"""
