"""The trained recommender behind HTTP through MLflow (docs/serving.md).

``schema`` (request/response layout and checks), ``model`` (the ``PythonModel``),
``pyfunc_model.py`` (the code MLflow logs), ``publish`` (log and register a model folder).
"""
