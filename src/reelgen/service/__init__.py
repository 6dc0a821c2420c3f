"""The video service: an OpenAI-compatible API over durable jobs, workers, object storage and delivery.

Importing this package (and its api/, jobs/, storage and delivery modules) never imports torch:
only the app factory and the executors touch a model.
"""
