"""Staged pipelines (``gan-pipeline run``): ``graph`` declares the stages and what each reads,
``stages`` holds their bodies, ``runner`` runs them as nested MLflow runs with reuse."""
