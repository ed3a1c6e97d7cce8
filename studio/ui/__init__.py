"""The Gradio page: one module per tab, who a request's writer is, the API endpoints."""
